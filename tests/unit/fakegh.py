"""A fake ``gh`` for the filing tests: records its arguments (one JSON list per line in ``$FAKE_GH_LOG``),
keeps the issues it created in ``$FAKE_GH_STATE``, and answers ``issue list --search`` from them."""

FAKE_GH = """#!{python}
import json, os, sys
log, state = os.environ["FAKE_GH_LOG"], os.environ["FAKE_GH_STATE"]
with open(log, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
issues = json.load(open(state)) if os.path.exists(state) else []
args = sys.argv[1:]
if args[:2] == ["issue", "create"]:
    body = open(args[args.index("--body-file") + 1]).read()
    issues.append({{"number": len(issues) + 1, "url": f"https://github.com/o/r/issues/{{len(issues) + 1}}",
                    "body": body}})
    json.dump(issues, open(state, "w"))
    print(issues[-1]["url"])
elif args[:2] == ["issue", "list"]:
    wanted = args[args.index("--search") + 1].split()[0]
    print(json.dumps([i for i in issues if wanted in i["body"]]))
"""
