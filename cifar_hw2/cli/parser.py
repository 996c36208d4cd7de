"""How the command line reads its arguments and ends: argparse that says a bad argument in one line
(the nearest name to a misspelt command, choice or flag included), help that shows only real
defaults, and the exit statuses, EXIT_STATUSES, the one list of them (`python -m cifar_hw2 --help`
shows it)."""
from __future__ import annotations

import argparse
import difflib
import re

from ..training.config import nearest

EXIT_BAD_INPUT, EXIT_FAILED = 2, 1
EXIT_WRITE_FAILED, EXIT_STOPPED, EXIT_INTERRUPTED = 74, 75, 130     # sysexits' EX_IOERR, EX_TEMPFAIL; 128 + SIGINT
EXIT_STATUSES = {
    0: "done, or stopped by --time-limit (its last line says: resume to continue)",
    EXIT_FAILED: "failed: a crash, a NaN loss, a failed grid row",
    EXIT_BAD_INPUT: "bad input, one line on stderr and no traceback: a setting, a path, a folder in use, "
                    "a resume with other settings",
    EXIT_WRITE_FAILED: "a file of the run folder could not be written (a full disk); the last good last.pt is kept",
    EXIT_STOPPED: "stopped by SIGTERM, SIGHUP, SIGUSR1, SIGUSR2 or Ctrl-C after writing last.pt where it stopped "
                  "(grid: its running rows did); resumable",
    EXIT_INTERRUPTED: "a second Ctrl-C: stopped at once; --resume (grid: the same command) continues from the last "
                      "last.pt. Also Ctrl-C while the command starts, before it has done anything",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block), with the nearest name to a
    misspelt command, choice or flag."""
    given: list[str] = []       # the command line being parsed (main sets it): a required flag's hint

    def error(self, message):
        # argparse's "invalid choice: 'trian' (choose from 'train', ...)": add the nearest, as the registries do.
        bad = re.search(r"invalid choice: '?([^' ]*)'? \(choose from (.*)\)$", message)
        if bad:
            message += nearest(bad.group(1), [c.strip("'\" ") for c in bad.group(2).split(",")])
        elif message.startswith("the following arguments are required"):     # --chekpoint for --checkpoint
            message += self._near_flags(self.given)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")

    def unrecognized(self, extras: list[str]) -> None:
        """argparse's "unrecognized arguments", with the nearest flag of this (sub)command for each misspelt one."""
        self.error(f"unrecognized arguments: {' '.join(extras)}" + self._near_flags(extras))

    def _near_flags(self, words: list[str]) -> str:
        """" (--epcohs: did you mean --epochs?)" for each word that looks like a flag of this parser but is not one."""
        flags = [s for a in self._actions for s in a.option_strings]    # no public list; test_private_apis guards it
        hints = []
        for word in words:
            flag = word.split("=", 1)[0]
            if not re.fullmatch(r"--?[A-Za-z][\w-]*", flag) or flag in flags:    # a value (-1), or a flag
                continue
            close = difflib.get_close_matches(flag, flags, n=1, cutoff=0.6)
            hints += [f"{flag}: did you mean {close[0]}?"] if close else []
        return f" ({'; '.join(hints)})" if hints else ""


class Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)", except where there is none to show (None, an empty list)."""

    def _get_help_string(self, action):
        return action.help if action.default is None or action.default == [] else super()._get_help_string(action)
