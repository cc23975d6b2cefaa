#!/usr/bin/env bash
# Haystack text for the study's data mix v3 (issue 10): English text of many kinds from Debian
# packages, as plain UTF-8 files, split into a training set and a held-out set that no model sees.
#
#   bash experiments/reader/haystacks.sh [OUT]      # default OUT: runs/reader/haystacks
#
#   train/   fortunes (quotes, jokes, poems, dialogue), the Jargon File (dictionary prose), the Debian
#            Policy Manual and its upgrading checklist (technical, version numbers), the GNU coding
#            standards, vim's manual (commands, options, code), the common licenses
#   heldout/ the Debian Developer's Reference (another technical manual, never trained on)
#
# The packages come from apt (`sudo apt-get install fortunes jargon-text debian-policy gnu-standards
# vim-runtime developers-reference`; `scripts/setup.sh --study` does it). The GPU machine has no apt:
# build the folder here and carry it (it is ~6 MB gzip-compressed).
set -euo pipefail
OUT=${1:-runs/reader/haystacks}
need=(/usr/share/games/fortunes/wisdom /usr/share/doc/jargon-text/jargon.txt.gz /usr/share/doc/debian-policy/policy.txt.gz
      /usr/share/doc/gnu-standards/standards.text.gz /usr/share/vim/vim90/doc/usr_01.txt
      /usr/share/developers-reference/_sources/pkgs.rst.txt /usr/share/common-licenses/GPL-3)
for f in "${need[@]}"; do
  [ -e "$f" ] || { echo "error: $f is missing; run: sudo apt-get install fortunes jargon-text debian-policy gnu-standards vim-runtime developers-reference base-files" >&2; exit 2; }
done
mkdir -p "$OUT/train" "$OUT/heldout"
python3 - "$OUT" <<'EOF'
import glob, gzip, os, re, sys
out = sys.argv[1]
def text(path):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    return raw.decode("utf-8", "replace").replace("\ufffd", "?").replace("\r", "")
def clean(t):  # no control characters but newline and tab; no long runs of blank lines
    t = "".join(c for c in t if c in "\n\t" or ord(c) >= 32)
    return re.sub(r"\n{3,}", "\n\n", t)
def write(name, t):
    path = os.path.join(out, name)
    with open(path + ".tmp", "w", encoding="utf-8") as f: f.write(clean(t))
    os.replace(path + ".tmp", path)
    print(f"{path}: {os.path.getsize(path)} bytes")
# fortunes: one cookie per paragraph, no '%' separators, no ASCII art
cookies = []
for f in sorted(glob.glob("/usr/share/games/fortunes/*")):
    if "." in os.path.basename(f) or os.path.basename(f) in ("art", "ascii-art") or os.path.isdir(f): continue
    cookies += [c.strip("\n") for c in text(f).split("\n%\n") if c.strip()]
write("train/fortunes.txt", "\n\n".join(cookies) + "\n")
write("train/jargon.txt", text("/usr/share/doc/jargon-text/jargon.txt.gz"))
write("train/debian-policy.txt", text("/usr/share/doc/debian-policy/policy.txt.gz") +
      text("/usr/share/doc/debian-policy/upgrading-checklist.txt.gz"))
write("train/gnu-standards.txt", text("/usr/share/doc/gnu-standards/standards.text.gz") +
      text("/usr/share/doc/gnu-standards/maintain.text.gz"))
write("train/vim-manual.txt", "".join(text(f) for f in sorted(glob.glob("/usr/share/vim/vim90/doc/usr_*.txt"))))
write("train/licenses.txt", "".join(text("/usr/share/common-licenses/" + f) for f in
      ("GPL-3", "GPL-2", "LGPL-2.1", "GFDL-1.3", "MPL-2.0", "Apache-2.0", "Artistic", "MPL-1.1")))
write("heldout/developers-reference.txt",
      "".join(text(f) for f in sorted(glob.glob("/usr/share/developers-reference/_sources/*.rst.txt"))))
EOF
