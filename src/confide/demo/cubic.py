"""The tutorial's app: f(x) = ax³ + bx² + cx + d, the coefficients in the app developer
secret ("a;b;c;d"), x in requester secret 1 (../shared/seeds, "Access requester
secrets"), in Python and in JavaScript. As the tutorial says, it never logs anything
that could reveal a secret: its messages name what is missing, never a value."""

from __future__ import annotations

PYTHON = '''\
"""f(x) = ax^3 + bx^2 + cx + d: a, b, c, d from the app developer secret ("a;b;c;d"),
x from requester secret 1. Never log anything that could reveal a secret."""

import json
import os
from pathlib import Path


def main() -> None:
    out = Path(os.environ["IEXEC_OUT"])
    a = b = c = d = 1.0  # default values
    app_secret = os.environ.get("IEXEC_APP_DEVELOPER_SECRET")
    if not app_secret:
        print("missing IEXEC_APP_DEVELOPER_SECRET")
    else:
        coefficients = app_secret.split(";")
        if len(coefficients) != 4:
            print("problem with the length of IEXEC_APP_DEVELOPER_SECRET")
        else:
            a, b, c, d = (float(value) for value in coefficients)
    x = 1.0
    requester_secret = os.environ.get("IEXEC_REQUESTER_SECRET_1")
    if not requester_secret:
        print("missing IEXEC_REQUESTER_SECRET_1")
    else:
        x = float(requester_secret)
    result = a * x**3 + b * x**2 + c * x + d
    result_path = out / "result.txt"
    result_path.write_text(json.dumps({"x": x, "result": result}))
    computed = {"deterministic-output-path": str(result_path)}
    (out / "computed.json").write_text(json.dumps(computed))


if __name__ == "__main__":
    main()
'''

NODE = """\
// f(x) = ax^3 + bx^2 + cx + d: a, b, c, d from the app developer secret ("a;b;c;d"),
// x from requester secret 1. Do not log anything that could reveal a secret.
const fsPromises = require("fs").promises;

(async () => {
  const iexecOut = process.env.IEXEC_OUT;
  let a = 1, b = 1, c = 1, d = 1; // default values
  const appSecret = process.env.IEXEC_APP_DEVELOPER_SECRET;
  if (!appSecret) {
    console.log("missing IEXEC_APP_DEVELOPER_SECRET");
  } else {
    const coefficients = appSecret.split(";");
    if (coefficients.length !== 4) {
      console.log("problem with the length of IEXEC_APP_DEVELOPER_SECRET");
    } else {
      [a, b, c, d] = coefficients.map(parseFloat);
    }
  }
  let x = 1;
  const requesterSecret = process.env.IEXEC_REQUESTER_SECRET_1;
  if (!requesterSecret) {
    console.log("missing IEXEC_REQUESTER_SECRET_1");
  } else {
    x = parseFloat(requesterSecret);
  }
  const result = a * Math.pow(x, 3) + b * Math.pow(x, 2) + c * x + d;
  await fsPromises.writeFile(`${iexecOut}/result.txt`, JSON.stringify({ x: x, result: result }));
  await fsPromises.writeFile(
    `${iexecOut}/computed.json`,
    JSON.stringify({ "deterministic-output-path": `${iexecOut}/result.txt` })
  );
})().catch(() => {
  // do not log anything that could reveal the app developer secret!
  process.exit(1);
});
"""

SOURCES = {"python": ("app.py", PYTHON), "node": ("app.js", NODE)}
APP_SECRET = "2;0;-1;5"  # noqa: S105 - the tutorial's public demo value: f(x) = 2x³ - x + 5
REQUESTER_SECRET = "3"  # noqa: S105 - the tutorial's x
EXPECTED = 56  # f(3) = 54 - 3 + 5
