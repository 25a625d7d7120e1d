"""The `companion` command line (DESIGN §1: the top layer; it imports the others, nothing imports it)."""
