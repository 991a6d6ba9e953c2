"""Crash-safety harness (``make reliability``): real daemons as subprocesses, killed with SIGKILL at
random moments and at the hard ones (a vendor applied a write, the daemon has not heard the answer),
restarted each time, while other users change appointments in three vendors and the sandboxes inject
faults. Then the vendors' own final state is judged: no change lost, no appointment duplicated, every
system equal. See docs/development.md "Reliability harness".
"""
