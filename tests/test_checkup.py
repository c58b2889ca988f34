"""vocabxfer doctor: every check passes on this install, and a crash in the
error-path child is reported, not suffered."""

import subprocess
import sys

from vocabxfer import doctor
from vocabxfer.ops.doctor import FAIL, PASS, SKIP, check_error_paths, run_error_cases
from vocabxfer.cli.main import main


def test_doctor_passes_here():
    report = doctor()
    assert report.ok, str(report)
    checks = {verdict.check: verdict.status for verdict in report.verdicts}
    assert checks["compiled ops load"] == PASS
    assert checks["shared C++ runtime"] == PASS
    assert checks["bit-exact on cpu"] == PASS
    assert checks["errors raise cleanly (child process)"] == PASS
    assert all(status in (PASS, SKIP) for status in checks.values())


def test_error_cases_raise_what_they_should():
    assert run_error_cases() == []


def test_a_crashing_child_is_reported_with_its_signal():
    verdict = check_error_paths("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert verdict.status == FAIL
    assert "died with SIGSEGV" in verdict.detail and "static copy of the C++ runtime" in \
        verdict.detail


def test_a_wrong_message_is_reported():
    verdict = check_error_paths("print('index out of range on cpu: message cut'); "
                                "raise SystemExit(1)")
    assert verdict.status == FAIL and verdict.detail == "index out of range on cpu: message cut"


def test_cli_doctor(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "vocabxfer doctor: all checks passed"
    assert any(line.startswith("PASS  bit-exact on cpu") for line in out)


def test_cli_doctor_exit_status_in_a_process():
    result = subprocess.run([sys.executable, "-m", "vocabxfer", "doctor"], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
