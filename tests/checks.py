"""What the manifest checks (k8s_check.py) and the alert checks (alerts_check.py) share:
counting checks, printing each failure, and the summary and exit status."""

import sys

failures = []
_passed = 0


def check(ok, what):
    """Counts one check; prints and keeps `what` when it fails. Returns `ok`."""
    global _passed
    if ok:
        _passed += 1
    else:
        failures.append(what)
        print("FAIL", what)
    return ok


def finish(name):
    """Prints `name: N passed, M failed` and exits non-zero on any failure."""
    print(f"{name}: {_passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)
