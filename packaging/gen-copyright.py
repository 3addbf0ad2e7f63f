#!/usr/bin/env python3
"""Writes debian/copyright (DEP-5) for Baton and every crate it vendors.

    python3 packaging/gen-copyright.py > packaging/debian/copyright
    python3 packaging/gen-copyright.py --metadata FILE   # cargo metadata's JSON

The crates are the packages of `cargo metadata --locked --offline` that are
not workspace members: the same set `cargo vendor` copies (every platform,
dev-dependencies included), each as `vendor/NAME-VERSION/` (the build
scripts vendor with `--versioned-dirs`). Each crate's licence is its
`license` field, an SPDX expression, turned into DEP-5 syntax; its
Copyright line is its `authors` (crates name no copyright holders in their
metadata, so this is the best the metadata gives: a crate without authors
gets "the NAME authors"). Every licence named gets a stand-alone paragraph:
Apache-2.0 and LGPL refer to /usr/share/common-licenses, the others carry
the text from packaging/licenses/. A licence the script does not know, or a
crate without a `license` field, is an error: a new dependency must not
slip into the archive unlicensed.

The output depends on Cargo.lock only (sorted, no date), so
packaging/tests/copyright.sh can compare it with the committed file.
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# SPDX id -> DEP-5 short name.
NAMES = {
    "MIT": "MIT",
    "Apache-2.0": "Apache-2.0",
    "BSD-2-Clause": "BSD-2-clause",
    "BSD-3-Clause": "BSD-3-clause",
    "ISC": "ISC",
    "Zlib": "Zlib",
    "Unicode-3.0": "Unicode-3.0",
    "Unlicense": "Unlicense",
    "CDLA-Permissive-2.0": "CDLA-Permissive-2.0",
    "LGPL-2.1-or-later": "LGPL-2.1+",
}
EXCEPTIONS = {"LLVM-exception": "LLVM"}

# Stand-alone licence paragraphs: a reference to the system's copy, or a
# file in packaging/licenses/.
COMMON = {
    "Apache-2.0": "Apache-2.0",
    "LGPL-2.1+": "LGPL-2.1",
}


def tokens(expr):
    expr = expr.replace("/", " OR ")
    return re.findall(r"\(|\)|[^\s()]+", expr)


def parse(expr):
    """SPDX expression -> nested ('or'|'and', [..]) / ('id', name)."""
    toks = tokens(expr)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def take():
        nonlocal pos
        pos += 1
        return toks[pos - 1]

    def atom():
        if peek() == "(":
            take()
            e = or_expr()
            if take() != ")":
                raise ValueError(f"unbalanced parentheses in {expr!r}")
            return e
        name = take()
        if name not in NAMES:
            raise ValueError(f"unknown licence {name!r} in {expr!r}: add it to gen-copyright.py")
        if peek() == "WITH":
            take()
            exc = take()
            if exc not in EXCEPTIONS:
                raise ValueError(f"unknown exception {exc!r} in {expr!r}")
            return ("id", f"{NAMES[name]} with {EXCEPTIONS[exc]} exception")
        return ("id", NAMES[name])

    def and_expr():
        parts = [atom()]
        while peek() == "AND":
            take()
            parts.append(atom())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def or_expr():
        parts = [and_expr()]
        while peek() == "OR":
            take()
            parts.append(and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    e = or_expr()
    if peek() is not None:
        raise ValueError(f"cannot parse {expr!r}")
    return e


def render(e):
    """DEP-5: `and` binds tighter than `or`; ", and" joins or-groups."""
    kind, val = e
    if kind == "id":
        return val
    if kind == "or":
        out = []
        for p in val:
            if p[0] == "or":
                raise ValueError("nested or")
            out.append(render(p))
        return " or ".join(out)
    # and
    out = []
    grouped = False
    for p in val:
        if p[0] == "or":
            grouped = True
            out.append(render(p))
        elif p[0] == "id":
            out.append(p[1])
        else:
            raise ValueError("nested and")
    return (", and " if grouped else " and ").join(out)


def names_in(e):
    kind, val = e
    if kind == "id":
        return {val}
    return set().union(*(names_in(p) for p in val))


def paragraph(fields):
    lines = []
    for key, value in fields:
        first, *rest = value.split("\n")
        lines.append(f"{key}: {first}")
        for line in rest:
            lines.append(" " + line if line.strip() else " .")
    return "\n".join(lines)


def licence_text(name):
    if name in COMMON:
        return (
            f"On Debian systems, the full text of the {name.replace('+', ' or later')} licence\n"
            f"can be found in /usr/share/common-licenses/{COMMON[name]}."
        )
    m = re.fullmatch(r"(.+) with (\w+) exception", name)
    if m:
        exc = {v: k for k, v in EXCEPTIONS.items()}[m.group(2)]
        return licence_text(m.group(1)) + "\n\n" + read_text(exc)
    return read_text(name)


def read_text(name):
    path = os.path.join(HERE, "licenses", name)
    with open(path, encoding="utf-8") as f:
        return f.read().strip("\n")


def main():
    args = sys.argv[1:]
    if args[:1] == ["--metadata"] and len(args) == 2:
        with open(args[1], encoding="utf-8") as f:
            meta = json.load(f)
    elif not args:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            cwd=REPO, check=True, capture_output=True, text=True,
        ).stdout
        meta = json.loads(out)
    else:
        sys.exit(__doc__)
    members = set(meta["workspace_members"])
    crates = sorted(
        (p for p in meta["packages"] if p["id"] not in members),
        key=lambda p: (p["name"], p["version"]),
    )
    paras = [
        paragraph([
            ("Format", "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"),
            ("Upstream-Name", "baton"),
            ("Source", "https://example.org/baton"),
            ("Comment", "Generated by packaging/gen-copyright.py from cargo metadata:\n"
                        "one paragraph per vendored crate (vendor/NAME-VERSION/), with\n"
                        "the licence its Cargo.toml declares and its authors as the\n"
                        "copyright holders."),
        ]),
        paragraph([
            ("Files", "*"),
            ("Copyright", "2026 Baton developers"),
            ("License", "MIT or Apache-2.0"),
        ]),
    ]
    used = {"MIT", "Apache-2.0"}
    errors = []
    for p in crates:
        if not p.get("license"):
            errors.append(f"{p['name']} {p['version']}: no license field")
            continue
        try:
            e = parse(p["license"])
        except ValueError as err:
            errors.append(f"{p['name']} {p['version']}: {err}")
            continue
        used |= names_in(e)
        authors = [re.sub(r"\s+", " ", a).strip() for a in p.get("authors") or []]
        holders = "\n".join(authors) if authors else f"the {p['name']} authors"
        paras.append(paragraph([
            ("Files", f"vendor/{p['name']}-{p['version']}/*"),
            ("Copyright", holders),
            ("License", render(e)),
        ]))
    if errors:
        sys.exit("gen-copyright.py:\n" + "\n".join(errors))
    for name in sorted(used):
        paras.append(paragraph([("License", name + "\n" + licence_text(name))]))
    sys.stdout.write("\n\n".join(paras) + "\n")


if __name__ == "__main__":
    main()
