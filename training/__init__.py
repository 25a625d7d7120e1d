"""Training scripts: data construction, SFT, DPO, router training, the fast summarizer."""
