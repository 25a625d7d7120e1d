"""The `companion` console command, run through its real entry point."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# The console script pip installed next to this interpreter: the entry point users run.
COMPANION = shutil.which("companion", path=str(Path(sys.executable).parent))
assert COMPANION, "the companion console script is missing; run scripts/bootstrap"


def _run(args, env, stdin="", timeout=180):
    return subprocess.run(
        [COMPANION, *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["chat", "--help"],
        ["models", "--help"],
        ["models", "prepare", "--help"],
        ["models", "info", "--help"],
        ["serve", "--help"],
        ["memory", "--help"],
        ["persona", "--help"],
        ["train", "--help"],
    ],
)
def test_every_command_has_help_with_an_example(args, subprocess_env):
    result = _run(args, subprocess_env)
    assert result.returncode == 0
    assert "Example: companion" in result.stdout


def test_train_lists_its_jobs_and_refuses_an_unknown_one(subprocess_env):
    listed = _run(["train", "list"], subprocess_env)
    assert listed.returncode == 0 and "python -m training.dpo.train" in listed.stdout
    unknown = _run(["train", "dpo2"], subprocess_env)
    assert (
        unknown.returncode == 2
        and "unknown job 'dpo2'" in unknown.stderr
        and "fast-summarizer" in unknown.stderr
    )


def test_every_training_job_the_cli_names_exists_with_a_main():
    """The job table names modules by string; a rename in training/ must fail here, not for a user."""
    from companion_cli.train import JOBS, job_main

    assert len(JOBS) >= 10
    for name in JOBS:
        assert callable(job_main(name)), name


def test_a_training_job_runs_through_the_cli_and_a_bad_config_says_what_to_fix(subprocess_env, tmp_path):
    out = tmp_path / "emotion.npz"
    done = _run(["train", "emotion", "--smoke", "--epochs", "5", "--out", str(out)], subprocess_env)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "train accuracy" in done.stdout
    bad = tmp_path / "router.yaml"
    bad.write_text("steps: 0\n")
    failed = _run(["train", "router", "--config", str(bad), "--out", str(tmp_path / "r")], subprocess_env)
    assert failed.returncode == 1 and "steps and batch_size must be >= 1" in failed.stderr


@pytest.mark.slow
def test_models_prepare_and_info(subprocess_env, default_paths):
    prepared = _run(["models", "prepare"], subprocess_env)
    assert prepared.returncode == 0, prepared.stderr
    assert str(default_paths.moe_dir) in prepared.stdout
    info = _run(["models", "info", "--routing", "top_p", "--top-p", "0.5"], subprocess_env)
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert (
        facts["engine"] == "hf" and facts["architecture"] == "MixtralForCausalLM"
    )  # routing options need hf
    assert facts["n_experts"] == 4 and facts["routing"]["policy"] == "top_p"
    served = json.loads(_run(["models", "info"], subprocess_env).stdout)
    assert (
        served["engine"] == "llamacpp" and "top-p routing exists only in the hf engine" in served["routing"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["llamacpp", "hf"])
def test_chat_streams_replies_from_the_default_backbone(subprocess_env, default_paths, engine, tmp_path):
    result = _run(
        [
            "chat",
            "--data-dir",
            str(tmp_path),  # its own memories: the other engine's run must not change this one's prompts
            "--persona",
            "mira",
            "--max-tokens",
            "12",
            "--temperature",
            "0",
            "--stats",
            "--engine",
            engine,
        ],
        subprocess_env,
        stdin="Hello! I just arrived from the coast.\nDo you have a room for tonight?\n",
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("Mira: ")]
    # a regenerated draft starts a new "Mira: " line, and a revised reply is printed again in full
    redone = result.stderr.count("[draft rejected") + result.stderr.count("[reply revised")
    assert len(lines) - redone == 3  # the first message, then one reply per player line
    assert all(len(line) > len("Mira: ") + 3 for line in lines[1:])
    assert "tok/s" in result.stderr and f"({engine})" in result.stderr
    assert ("experts/token" in result.stderr) == (engine == "hf")  # only hf sees the routers


def test_chat_with_an_unknown_persona_says_which_exist(subprocess_env):
    result = _run(["chat", "--persona", "nobody"], subprocess_env)
    assert result.returncode == 1
    assert "unknown persona 'nobody'" in result.stderr and "mira" in result.stderr


def test_bad_model_path_is_a_clear_error(subprocess_env, tmp_path):
    result = _run(["models", "info", "--model", str(tmp_path / "missing")], subprocess_env)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["list", "search", "export", "remember", "forget"])
def test_memory_commands_have_help_with_an_example(command, subprocess_env):
    result = _run(["memory", command, "--help"], subprocess_env)
    assert result.returncode == 0 and "Example: companion memory" in result.stdout


def test_memory_commands_end_to_end(subprocess_env, tmp_path):
    env = dict(subprocess_env, COMPANION_DATA_DIR=str(tmp_path))
    told = _run(
        [
            "memory",
            "remember",
            "--player",
            "p1",
            "--npc",
            "mira",
            "I have a really sensitive stomach. I love spicy food.",
        ],
        env,
    )
    assert told.returncode == 0, told.stderr
    assert "created    health" in told.stdout and "The player loves spicy food." in told.stdout
    found = _run(["memory", "search", "--player", "p1", "--npc", "mira", "I've been craving hotpot"], env)
    assert found.stdout.splitlines()[0].endswith("The player has a really sensitive stomach.")
    exported = json.loads(_run(["memory", "export", "--player", "p1"], env).stdout)
    assert len(exported["events"]) == 2
    assert "2 events" in _run(["memory", "list", "--player", "p1"], env).stderr
    refused = _run(["memory", "forget", "--player", "p1"], env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert "deleted 2 events" in _run(["memory", "forget", "--player", "p1", "--yes"], env).stdout
    assert _run(["memory", "list", "--player", "p1"], env).stdout == ""


@pytest.mark.slow
def test_chat_runs_the_pipeline_and_memories_persist_across_runs(subprocess_env, tmp_path, default_paths):
    env = dict(subprocess_env, COMPANION_DATA_DIR=str(tmp_path))
    args = ["chat", "--player", "ana", "--max-tokens", "8", "--temperature", "0", "--meta"]
    first = _run(args, env, stdin="I have a really sensitive stomach.\n")
    assert first.returncode == 0, first.stderr
    assert "0 memories of ana" in first.stderr
    second = _run(args, env, stdin="I've been craving hotpot lately.\n")
    assert "1 memories of ana" in second.stderr
    meta = json.loads(next(line for line in second.stderr.splitlines() if line.startswith("[{"))[1:-1])
    assert meta["strategy"] == "recall" and len(meta["memories_used"]) == 1


@pytest.mark.parametrize("command", ["list", "show", "validate", "new", "import", "export", "train"])
def test_persona_commands_have_help_with_an_example(command, subprocess_env):
    result = _run(["persona", command, "--help"], subprocess_env)
    assert result.returncode == 0 and "Example: companion persona" in result.stdout


def test_persona_commands_end_to_end(subprocess_env, tmp_path):
    env = dict(subprocess_env, COMPANION_DATA_DIR=str(tmp_path))
    listed = _run(["persona", "list"], env)
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["marlowe", "mira", "orla"]
    made = _run(["persona", "new", "--id", "bram", "--name", "Bram", "--description", "Bram is the village smith.",
                 "--must-refuse", "cars"], env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "bram" in _run(["persona", "list"], env).stdout
    assert "name: Bram" in _run(["persona", "show", "bram"], env).stdout
    card = tmp_path / "bram.png"
    assert _run(["persona", "export", "bram", "--format", "png", "--out", str(card)], env).returncode == 0
    imported = _run(["persona", "import", str(card), "--id", "bram2"], env)
    assert imported.returncode == 0 and "imported Bram as bram2" in imported.stdout
    good = _run(["persona", "validate", str(tmp_path / "personas" / "bram2.yaml")], env)
    assert good.returncode == 0 and good.stdout.startswith("ok")
    (tmp_path / "bad.yaml").write_text("id: bad\nname: Bad\n")
    bad = _run(["persona", "validate", str(tmp_path / "bad.yaml")], env)
    assert bad.returncode == 1 and "field 'description'" in bad.stderr
    unknown = _run(["persona", "show", "nobody"], env)
    assert unknown.returncode == 1 and "known personas" in unknown.stderr
