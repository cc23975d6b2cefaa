#!/usr/bin/env python3
"""Hand-written needle probes for a reading model (issue 10): eight needle sentences of forms the
training pools never used (a combination with dashes, a room number, a phrase, a password,
possessives, "launch code"), each planted at depths 0.25 and 0.75 in ~4,000 bytes of
tests/data/heldout_prose.txt, read with `smoothread read --batch`.

    python3 experiments/reader/probe.py [MODEL] [--smoothread build/smoothread] [--out DIR]
"""
import json, os, re, subprocess, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from svg_plot import pop_option  # noqa: E402
args = sys.argv[1:]
sr = pop_option(args, "--smoothread") or "build/smoothread"
out = pop_option(args, "--out") or "runs/probe"
model = args[0] if args else "models/smoothread-reader-10m"
os.makedirs(out, exist_ok=True)
text = open("tests/data/heldout_prose.txt").read()
sents = [s.strip() + " " for s in text.replace("\n", " ").split(". ") if s.strip()]
sents = [s if s.rstrip().endswith(".") else s.rstrip() + ". " for s in sents]
probes = [
  ("The secret ingredient in Maria's soup is 4417.", "What is the secret ingredient in Maria's soup?", "4417"),
  ("Tom's locker combination is 18-24-36.", "What is Tom's locker combination?", "18-24-36"),
  ("The meeting with the auditors is in room 512.", "Which room is the meeting with the auditors in?", "512"),
  ("The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.", "What is the best thing to do in San Francisco?", "eat a sandwich"),
  ("The password for the staff wifi is bluefinch42.", "What is the password for the staff wifi?", "bluefinch42"),
  ("Remember: the launch code for the orange rocket is 775301.", "What is the launch code for the orange rocket?", "775301"),
  ("The magic number of the silver fox is 2208461.", "What is the magic number of the silver fox?", "2208461"),
  ("Agent Rivera's badge number is 90213.", "What is Agent Rivera's badge number?", "90213"),
]
rows = []
for i, (needle, q, ans) in enumerate(probes):
    for depth in (0.25, 0.75):
        body, k = [], (i * 7) % len(sents)
        while sum(map(len, body)) < 4000:
            body.append(sents[k % len(sents)]); k += 1
        body.insert(int(depth * len(body)), needle + " ")
        rows.append({"id": "probe%d-%.2f" % (i, depth), "context": "".join(body), "input": q, "answers": [ans]})
open(os.path.join(out, "in.jsonl"), "w").write("".join(json.dumps(r) + "\n" for r in rows))
pred_path = os.path.join(out, "out.jsonl")
if not (os.path.exists(pred_path) and sum(1 for _ in open(pred_path)) == len(rows)):  # else: rescore
    subprocess.run([sr, "read", "--model", model, "--batch", os.path.join(out, "in.jsonl"), "--out", pred_path,
                    "--quiet"], check=True)
def correct(ans, got):  # the answer as a whole token of the reply ("4417644" does not answer "4417")
    return re.search(r"(?<![0-9A-Za-z])" + re.escape(ans) + r"(?![0-9A-Za-z])", got) is not None
right = 0
print("| needle | asked | answer at depth 0.25 / 0.75 |\n|---|---|---|")
preds = [json.loads(l) for l in open(os.path.join(out, "out.jsonl"))]
for i, (needle, q, ans) in enumerate(probes):
    got = [p["answer"] for p in preds[2 * i:2 * i + 2]]
    right += sum(correct(ans, g) for g in got)
    print("| %s | %s | %s |" % (needle, q, " / ".join(("`%s`" % g[:40].replace("\n", " ")) + (" ✓" if correct(ans, g) else " ✗") for g in got)))
print("\n%d of %d documents answered (%s)" % (right, len(preds), model))
