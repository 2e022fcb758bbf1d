"""The command line: help, listing, validation, and bad configs (exit 2, nothing written)."""

from __future__ import annotations

import pytest

from conftest import leftovers


def write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_help_and_jobs(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0 and "run" in r.stdout and "validate" in r.stdout
    r = run_cli("jobs")
    assert r.returncode == 0 and "selfcheck" in r.stdout


def test_validate_ok(cli):
    r = cli("validate", "selfcheck")
    assert r.code == 0 and "ok: selfcheck" in r.out


@pytest.mark.parametrize("body, key, words", [
    ("job = 'selfcheck'\nn_sample = 5\n", "n_sample", "did you mean 'n_samples'"),
    ("job = 'selfcheck'\nn_samples = 'many'\n", "n_samples", "valid integer"),
    ("job = 'selfcheck'\nn_samples = -5\n", "n_samples", "greater than 0"),
    ("job = 'selfcheck'\nchunk_size = 1.5\n", "chunk_size", "integer"),
    ("job = 'hazard'\n", "job", "not 'selfcheck'"),
])
def test_bad_config_exit_2_names_file_and_key(cli, tmp_path, body, key, words):
    path = write(tmp_path, body)
    out = tmp_path / "runs"
    r = cli("run", "selfcheck", "--config", path, "--out", out, "--quiet")
    assert r.code == 2
    assert str(path) in r.err and f"key '{key}'" in r.err and words in r.err
    assert r.err.count("\n") == 1  # one message
    assert leftovers(out) == []
    # validate reports the same problem without running
    assert cli("validate", "selfcheck", "--config", path).code == 2


def test_bad_override_names_the_key(cli, tmp_path):
    out = tmp_path / "runs"
    r = cli("run", "selfcheck", "--set", "n_samples=0", "--out", out, "-q")
    assert r.code == 2 and "key 'n_samples'" in r.err and "--set" in r.err
    r = cli("run", "selfcheck", "--set", "seeds=3", "--out", out, "-q")
    assert r.code == 2 and "key 'seeds'" in r.err and "did you mean 'seed'" in r.err
    assert leftovers(out) == []


def test_toml_syntax_error_and_missing_file(cli, tmp_path):
    path = write(tmp_path, "job = 'selfcheck'\nn_samples = = 3\n")
    r = cli("run", "selfcheck", "--config", path, "--out", tmp_path / "runs")
    assert r.code == 2 and str(path) in r.err and "not valid TOML" in r.err
    r = cli("validate", "selfcheck", "--config", tmp_path / "nope.toml")
    assert r.code == 2 and "nope.toml" in r.err and "not found" in r.err


def test_unknown_job(cli):
    r = cli("run", "nosuchjob")
    assert r.code == 2 and "unknown job 'nosuchjob'" in r.err and "selfcheck" in r.err


def test_bad_config_as_a_real_process(run_cli, tmp_path):
    out = tmp_path / "runs"
    r = run_cli("run", "selfcheck", "--set", "top_k=0", "--out", out)
    assert r.returncode == 2 and "key 'top_k'" in r.stderr
    assert leftovers(out) == []


def test_bad_cluster_spec(cli, tmp_path):
    spec = write(tmp_path, "kind = 'local'\nn_workerz = 2\n", "spec.toml")
    r = cli("run", "selfcheck", "--cluster", spec, "--out", tmp_path / "runs", "-q")
    assert r.code == 2 and str(spec) in r.err and "key 'n_workerz'" in r.err
    spec = write(tmp_path, "kind = 'mainframe'\n", "spec2.toml")
    r = cli("run", "selfcheck", "--cluster", spec, "--out", tmp_path / "runs", "-q")
    assert r.code == 2 and "unknown cluster kind 'mainframe'" in r.err
    assert leftovers(tmp_path / "runs") == []
