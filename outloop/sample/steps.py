"""Building blocks of the sample: the generator of realistic tool calls and their outputs."""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass
from typing import Any

HOME = "/home/dev"
PROJECTS = {"api": f"{HOME}/shop-api", "web": f"{HOME}/shop-web"}
MODEL, VERSION, SYSTEM_TOKENS = "claude-sonnet-4-5-20250929", "2.0.31", 14_026
MODULES = ["cart", "orders", "pricing", "inventory", "payments", "users", "shipping", "coupons"]
TASKS = {
    "api": ["Fix the failing discount tests in the cart", "Add a refund endpoint for orders",
            "The shipping cost is wrong for EU addresses, fix it", "Refactor pricing to use Decimal"],
    "web": ["The checkout page build fails, fix it", "Add a loading spinner to the cart drawer"],
}
TODO_ACK = ("Todos have been modified successfully. Ensure that you continue to use the todo list to "
            "track your progress. Please proceed with the current tasks if applicable")


@dataclass
class Call:
    id: str
    name: str
    input: dict[str, Any]
    text: str  # tool_result content, as the model saw it
    is_error: bool
    result: Any  # toolUseResult in the transcript, tool_response in the hook payload
    seconds: float  # how long the tool ran


@dataclass
class Step:
    thinking: str | None
    text: str | None
    calls: list[Call]


class Gen:
    """Content of plausible sessions, all drawn from one seeded random generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def b62(self, n: int) -> str:
        return "".join(self.rng.choice(string.ascii_letters + string.digits) for _ in range(n))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def call(self, name: str, inp: dict[str, Any], text: str, result: Any, seconds: float,
             error: bool = False) -> Call:
        return Call(f"toolu_01{self.b62(22)}", name, inp, text, error, result, seconds)

    def source(self, module: str) -> list[str]:
        out = ["from decimal import Decimal", "", f"from shop.models import {module.title()}", ""]
        for i in range(self.rng.randint(6, 14)):
            name = f"{self.rng.choice(['get', 'apply', 'compute', 'validate', 'load'])}_{module}_{i}"
            out += [f"def {name}(items, rate=Decimal('0.{self.rng.randint(5, 95)}')):",
                    f'    """{name.replace("_", " ").capitalize()}."""', "    total = Decimal(0)",
                    "    for item in items:", "        total += item.price * item.quantity",
                    f"    return round(total * rate, {self.rng.randint(0, 2)})", ""]
        return out

    def bash(self, command: str, out: str, code: int = 0, seconds: float = 1.0) -> Call:
        text = f"Exit code {code}\n{out}" if code else out
        result = {"stdout": out, "stderr": "", "interrupted": False, "isImage": False}
        return self.call("Bash", {"command": command, "description": f"Run {command}"}, text, result, seconds,
                         code != 0)

    def pytest(self, target: str, failing: list[str]) -> Call:
        tests = {m: self.rng.randint(8, 30) for m in MODULES}
        lines, done, total = [], 0, sum(tests.values())
        for m, n in tests.items():
            bad, done = sum(1 for f in failing if f.startswith(f"{m}::")), done + n
            dots = "." * (n - bad) + "F" * bad
            lines.append(f"tests/unit/test_{m}.py {dots}  [{100 * done // total:>3}%]")
        for f in failing:
            mod, test = f.split("::")
            lines += [f"{'_' * 30} {test} {'_' * 30}", "", "    def " + test + "():",
                      f"        items = make_items({self.rng.randint(2, 9)})"]
            lines += [f"        {mod}_{k} = build(items, seed={k})" for k in range(self.rng.randint(9, 30))]
            want, got = self.rng.randint(50, 99), self.rng.randint(10, 49)
            lines += [f">       assert apply_{mod}(items) == Decimal('{want}.00')",
                      f"E       AssertionError: assert Decimal('{got}.00') == Decimal('{want}.00')", "",
                      f"tests/unit/test_{mod}.py:{self.rng.randint(20, 300)}: AssertionError"]
        lines += [f"FAILED tests/unit/test_{f.replace('::', '.py::')} - AssertionError" for f in failing]
        secs = self.rng.uniform(2.0, 9.0)
        passed = sum(tests.values()) - len(failing)
        summary = (f"{len(failing)} failed, " if failing else "") + f"{passed} passed in {secs:.2f}s"
        return self.bash(f"pytest {target} -q", "\n".join(lines + [summary]), 1 if failing else 0, secs)

    def read(self, path: str, module: str) -> Call:
        body = self.source(module)
        text = "\n".join(f"{i:>6}\u2192{line}" for i, line in enumerate(body, 1))
        file = {"filePath": path, "content": "\n".join(body), "numLines": len(body), "startLine": 1,
                "totalLines": len(body)}
        return self.call("Read", {"file_path": path}, text, {"type": "text", "file": file}, 0.05)

    def edit(self, path: str) -> Call:
        old, new = "total = Decimal(0)", f"total = Decimal('0.{self.rng.randint(0, 9)}')"
        inp = {"file_path": path, "old_string": old, "new_string": new}
        text = f"The file {path} has been updated. Here's the result of running `cat -n` on a snippet " \
               f"of the edited file:\n    41\u2192    {new}\n    42\u2192    for item in items:"
        result = {"filePath": path, "oldString": old, "newString": new, "replaceAll": False,
                  "userModified": False}
        return self.call("Edit", inp, text, result, 0.1)

    def grep(self, pattern: str, files: list[str]) -> Call:
        text = f"Found {len(files)} files\n" + "\n".join(files)
        mode = "files_with_matches"
        return self.call("Grep", {"pattern": pattern, "output_mode": mode}, text,
                         {"mode": mode, "filenames": files, "numFiles": len(files)}, 0.2)

    def todo(self, items: list[str], done: int) -> Call:
        status = ["completed"] * done + ["in_progress"] + ["pending"] * len(items)
        todos = [{"content": t, "status": status[i], "activeForm": t} for i, t in enumerate(items)]
        return self.call("TodoWrite", {"todos": todos}, TODO_ACK, {"oldTodos": [], "newTodos": todos}, 0.01)

    def session(self, kind: str, index: int) -> tuple[str, list[Step]]:
        """The prompt and the assistant steps of one session of kind ``api`` or ``web``."""
        root, rng = PROJECTS[kind], self.rng
        task = TASKS[kind][index % len(TASKS[kind])]
        mods = rng.sample(MODULES, 3)
        changed = [f"src/shop/{m}.py" for m in mods] if kind == "api" else ["src/pages/Checkout.tsx"]
        todo = [task, "Run the unit tests", "Run the linter"]
        steps = [Step(f"The user wants: {task}. Let me plan.", None, [self.todo(todo, 0)]),
                 Step(None, "Let me look at the state.", [self.bash("git status", git_status(changed))])]
        if kind == "api":
            files = [f"{root}/{c}" for c in changed]
            steps.append(Step(None, None, [self.grep(f"def apply_{mods[0]}", files)]))
            reads = [self.read(f, m) for f, m in zip(files, mods, strict=True)]
            steps.append(Step("Read the candidates.", None, reads))
            failing = [f"{mods[0]}::test_{mods[0]}_{k}" for k in range(rng.randint(1, 3))]
            steps.append(Step(None, "Run the tests first.", [self.pytest("tests/unit", failing)]))
            while failing:
                failing = failing[:-1] if rng.random() < 0.7 else failing
                steps.append(Step("Adjust the rounding.", None, [self.edit(files[0])]))
                steps.append(Step(None, None, [self.pytest("tests/unit", failing)]))
            lint = f"{changed[1]}:3:1: F401 [*] `os` imported but unused\nFound 1 error."
            steps.append(Step(None, None, [self.bash("ruff check .", lint, 1, 0.4)]))
            steps.append(Step(None, None, [self.edit(files[1])]))
            steps.append(Step(None, None, [self.bash("ruff check .", "All checks passed!", 0, 0.3)]))
        else:
            page = f"{root}/src/pages/Checkout.tsx"
            steps.append(Step(None, None, [self.read(page, "checkout")]))
            for attempt in range(rng.randint(2, 4)):
                ok = attempt > 0 and rng.random() < 0.5
                build = self.bash("npm run build", vite_build(rng, ok), 0 if ok else 2, rng.uniform(8, 30))
                steps.append(Step(None, "Build it.", [build]))
                if ok:
                    break
                steps.append(Step("Fix the type error.", None, [self.edit(page)]))
            tests = f"Test Files  9 passed (9)\n     Tests  {rng.randint(40, 90)} passed"
            steps.append(Step(None, None, [self.bash("npm test", tests, 0, 6.0)]))
        steps.append(Step(None, None, [self.todo(todo, 3)]))
        steps.append(Step(None, None, [self.bash("git status", git_status(changed))]))
        steps.append(Step(None, f"Done: {task.lower()}. All tests pass.", []))
        return task, steps


def git_status(changed: list[str]) -> str:
    return "On branch main\nChanges not staged for commit:\n" + "\n".join(
        f"\tmodified:   {c}" for c in changed) + '\n\nno changes added to commit (use "git add")'


def vite_build(rng: random.Random, ok: bool) -> str:
    chunks = [f"dist/assets/{n}-{rng.getrandbits(32):08x}.js  {rng.uniform(1, 300):.2f} kB" for n in
              ("index", "cart", "checkout", "vendor")]
    tail = f"built in {rng.uniform(2, 9):.2f}s" if ok else \
        "src/pages/Checkout.tsx(42,7): error TS2322: Type 'string' is not assignable to type 'number'."
    head = ["> shop-web@1.4.0 build", "> tsc && vite build", "vite v5.4.8 building for production..."]
    return "\n".join([*head, f"transforming... {rng.randint(300, 900)} modules transformed.", *chunks, tail])
