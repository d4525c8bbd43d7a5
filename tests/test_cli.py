import subprocess
import sys

from mrcnn_kp import cli


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "mrcnn_kp.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for name in ("demo", "train", "evaluate", "predict", "convert", "export"):
        assert name in out


def test_unbuilt_subcommand_says_so(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "frobnicate", "a command nobody wrote")
    assert cli.main(["frobnicate"]) == cli.NOT_BUILT
    assert "mrcnn-kp frobnicate: not built yet" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert cli.main([]) == cli.NOT_BUILT
    assert "usage: mrcnn-kp" in capsys.readouterr().out
