"""Hostile ids shared by the tests of every place that checks an id (``ppo_dr.ids``):
a sample each caller's wiring is tested with, and the whole list the rule itself is."""

from __future__ import annotations

#: Shell metacharacters, path tricks, case, length and Unicode: what every field that
#: holds an id must refuse, tested field by field (so kept short).
HOSTILE_ID_SAMPLE = [
    "a;rm -rf /",
    "../x",
    "A B",
    "",
    "a" * 64,
    "-lead",
    "a_b",
    "a.b",
    "$(reboot)",
    "x`id`",
    "a|b",
    "a\nb",
    "a/b",
    "café",
    "App",
]

#: Every value the rule must refuse: the sample and what else a shell, a path or a
#: Unicode confusable could smuggle in (tested against the rule itself, once each).
HOSTILE_IDS = [
    *HOSTILE_ID_SAMPLE,
    "-a",
    "a b",
    "a\tb",
    "a\n",
    "\na",
    " a",
    "a ",
    "/",
    "..",
    ".",
    "a..b",
    "A",
    "ａ",  # fullwidth a
    "١",  # Arabic-Indic digit one: a \\d, but not [0-9]
    "`id`",
    "a&b",
    "a>b",
    "a<b",
    "a*",
    "a?",
    "~a",
    "a\x00",
    "a'b",
    'a"b',
    "a\\b",
    "a%2e%2e",
]
