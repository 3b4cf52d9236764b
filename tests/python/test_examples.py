"""The examples run end to end at a small size: Python, C++ (compiled here) and shell."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from smos_mount import REPO, MountedTestCase

EXAMPLES = os.path.join(REPO, "examples")


class ExamplesTest(MountedTestCase):
    def run_example(self, args, timeout=180):
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        self.assertEqual(proc.returncode, 0, f"{args[0]}:\n{proc.stdout}\n{proc.stderr}")
        self.assertEqual([o for o in os.listdir(self.mnt)], [], "the example left objects")
        return proc.stdout

    def test_python_pipeline(self):
        out = self.run_example([sys.executable, os.path.join(EXAMPLES, "rl_pipeline.py"),
                                "--mount", self.mnt, "--actors", "3", "--trajectories", "30",
                                "--steps", "8", "--batch", "4", "--weights-size", "65536",
                                "--timeout", "120"])
        self.assertIn("90 trajectories", out)

    def test_cc_pipeline(self):
        cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
        if cxx is None:
            self.skipTest("no C++ compiler")
        with tempfile.TemporaryDirectory() as tmp:
            binary = os.path.join(tmp, "rl_pipeline")
            subprocess.run([cxx, "-std=c++20", "-O1", "-Wall", "-Wextra", "-Werror",
                            "-I", os.path.join(REPO, "include"),
                            os.path.join(EXAMPLES, "rl_pipeline.cc"), "-o", binary],
                           check=True, timeout=180)
            out = self.run_example([binary, self.mnt, "3", "30", "8", "4", "65536"])
        self.assertIn("learner popped 90 trajectories", out)

    def test_shell_pipeline(self):
        for tool in ("bash", "getfattr", "setfattr", "md5sum", "od"):
            if shutil.which(tool) is None:
                self.skipTest(f"no {tool}")
        out = self.run_example(["bash", os.path.join(EXAMPLES, "rl_pipeline.sh"), self.mnt,
                                "3", "10", "5"])
        self.assertIn("30 of 30 trajectories popped, 0 duplicates", out)


if __name__ == "__main__":
    unittest.main()
