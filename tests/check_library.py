"""The engine as a library, installed: `make install` into a temporary prefix, then
examples/generate.c built against it with nothing but what pkg-config says, and its text
compared with the installed tllm-run's. Run once per `make test` (the install is of the
release build whatever $ENGINE_BIN says).
"""
import os
import re
import shutil
import subprocess

import common
from test_bundled import BUNDLED, quiet_make_env
from test_stories import readme_text

HEADERS = ["model.h", "attention.h", "matmul.h", "error.h", "tokenizer.h", "unicode.h", "sampler.h",
           "chat.h"]
# (prompt, steps): no prompt (the known story), a prompt, one whose pieces split a UTF-8 character
CASES = [("", 200), ("Once upon a time", 100), ("Lily saw a caf\u00e9 \u2615 and", 60)]


def fresh_dir(name):
    path = os.path.abspath(common.tmp_path(name))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def install(*assignments):
    """Runs `make install` with the given VAR=value assignments."""
    p = subprocess.run(["make", "--no-print-directory", "install"] + list(assignments),
                       capture_output=True, text=True, env=quiet_make_env(), timeout=600)
    assert p.returncode == 0, f"make install {assignments} failed: {p.stdout}{p.stderr}"


def installed_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def pkg_config(env):
    """`pkg-config --cflags --libs tllm` as a list of flags."""
    assert shutil.which("pkg-config"), "pkg-config is not installed (apt-get install pkgconf)"
    p = subprocess.run(["pkg-config", "--cflags", "--libs", "tllm"], capture_output=True,
                       text=True, env=dict(os.environ, **env), timeout=30)
    assert p.returncode == 0, f"pkg-config tllm: {p.stderr}"
    return p.stdout.split()


def compile_example(flags, out):
    """Builds examples/generate.c with flags only (warnings are errors); returns out."""
    cmd = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "examples/generate.c"] + flags + \
        ["-o", out]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(cmd)}:\n{p.stderr}"
    return out


def check_same_text(example, tllm_run):
    for prompt, steps in CASES:
        want = subprocess.run([tllm_run, BUNDLED, "-t", "0", "-n", str(steps), "-i", prompt],
                              capture_output=True, timeout=60)
        assert want.returncode == 0, want.stderr
        got = subprocess.run([example, BUNDLED, prompt, str(steps)], capture_output=True,
                             timeout=60)
        assert got.returncode == 0, got.stderr
        assert got.stdout == want.stdout, (f"{prompt!r}, {steps} steps: the example printed\n"
                                           f"{got.stdout!r}\ntllm-run printed\n{want.stdout!r}")
        assert len(got.stdout) > len(prompt.encode()) + 40, got.stdout  # it did generate
    story = subprocess.run([example, BUNDLED, "", "200"], capture_output=True, timeout=60)
    assert story.stdout.decode() == readme_text() + "\n", story.stdout


def test_installed_library_example():
    prefix = fresh_dir("install_prefix")
    install(f"PREFIX={prefix}")
    expected = sorted(["bin/tllm-run", "lib/libtllm.a", "lib/pkgconfig/tllm.pc"] +
                      [f"include/tllm/{h}" for h in HEADERS])
    assert installed_files(prefix) == expected, installed_files(prefix)

    flags = pkg_config({"PKG_CONFIG_PATH": os.path.join(prefix, "lib", "pkgconfig")})
    assert f"-I{prefix}/include" in flags and "-ltllm" in flags, flags
    # each public header compiles on its own with those flags
    for h in HEADERS:
        src = common.tmp_path("header_alone.c")
        with open(src, "w") as f:
            f.write(f"#include <tllm/{h}>\nint main(void) {{ return 0; }}\n")
        cmd = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", src] + flags
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"<tllm/{h}> alone does not compile:\n{p.stderr}"

    tllm_run = os.path.join(prefix, "bin", "tllm-run")
    # the installed program calls itself by the name it is installed under
    p = subprocess.run([tllm_run, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("tllm-run "), p.stdout
    p = subprocess.run([tllm_run, BUNDLED, "--bogus"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("tllm-run: --bogus: "), p.stderr
    example = compile_example(flags, common.tmp_path("generate_example"))
    check_same_text(example, tllm_run)
    check_only_the_api_is_global(os.path.join(prefix, "lib", "libtllm.a"), flags)


def api_functions():
    """The functions the public headers (model.h, tokenizer.h, sampler.h, chat.h, unicode.h)
    declare: a line starting with a type (not a typedef) and holding `name(`."""
    names = set()
    for h in ("model.h", "tokenizer.h", "sampler.h", "chat.h", "unicode.h"):
        with open(h) as f:
            names |= set(re.findall(r"^(?!typedef )[A-Za-z][\w ]*[ *]+(\w+)\(", f.read(), re.M))
    return names


def check_only_the_api_is_global(archive, flags):
    # The library's own helpers are local to it: its global symbols are exactly the API, and a
    # program with functions and variables named like them links against it and runs.
    p = subprocess.run(["nm", "-g", "--defined-only", archive], capture_output=True, text=True,
                       timeout=60)
    exported = {line.split()[2] for line in p.stdout.splitlines() if len(line.split()) == 3}
    assert exported == api_functions(), (sorted(exported - api_functions()),
                                         sorted(api_functions() - exported))
    # and the parse of the headers found what a user calls (it is the Makefile's too)
    assert {"model_load", "model_forward", "tokenizer_decode", "tokenizer_encode_text",
            "sampler_sample", "chat_encode_turn", "unicode_nfc"} <= exported, sorted(exported)
    # add, softmax, rmsnorm: in no installed header; round64, min_int, int8_input: the kernels'
    # inline helpers (simd.h), which no installed header may bring along; matmul, rope,
    # attention: declared by the headers model.h includes for its types, so defined in a file
    # that does not include it
    main_c, other_c = common.tmp_path("same_names.c"), common.tmp_path("same_names_other.c")
    with open(main_c, "w") as f:
        f.write("#include <stdio.h>\n#include <tllm/model.h>\n"
                "int add(int a, int b) { return a + b; }\n"
                "float softmax(float x) { return x; }\nint rmsnorm = 2;\n"
                "int round64 = 1, min_int = 2, int8_input = 3;\n"
                "int other(void);\n"
                "int main(int argc, char **argv) {\n"
                "    Model m = {0};\n    char err[ERR_MAX];\n"
                "    if (argc < 2 || model_load(&m, argv[1], NULL, err) != 0) return 1;\n"
                "    printf(\"%d %d\\n\", m.config.dim, add(other(), rmsnorm) + (int)softmax(0)"
                "           + round64 + min_int + int8_input - 6);\n"
                "    model_free(&m);\n    return 0;\n}\n")
    with open(other_c, "w") as f:
        f.write("int matmul(void) { return 3; }\nint rope(void) { return 4; }\n"
                "int attention(void) { return 3; }\n"
                "int other(void) { return matmul() + rope() + attention(); }\n")
    exe = common.tmp_path("same_names")
    cmd = ["cc", "-std=c11", main_c, other_c] + flags + ["-o", exe]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"{' '.join(cmd)}:\n{p.stderr}"
    p = subprocess.run([exe, BUNDLED], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout == "64 12\n", (p.returncode, p.stdout, p.stderr)


def test_install_into_destdir():
    # A package build: files under DESTDIR, paths inside them as if installed in PREFIX;
    # pkg-config's sysroot maps the one onto the other.
    stage = fresh_dir("install_destdir")
    install(f"DESTDIR={stage}", "PREFIX=/opt/tllm")
    root = stage + "/opt/tllm"
    assert "lib/libtllm.a" in installed_files(root), installed_files(stage)
    with open(os.path.join(root, "lib", "pkgconfig", "tllm.pc")) as f:
        assert "prefix=/opt/tllm\n" in f.read()
    flags = pkg_config({"PKG_CONFIG_PATH": os.path.join(root, "lib", "pkgconfig"),
                        "PKG_CONFIG_SYSROOT_DIR": stage})
    assert f"-I{root}/include" in flags, flags
    example = compile_example(flags, common.tmp_path("generate_example_destdir"))
    check_same_text(example, os.path.join(root, "bin", "tllm-run"))
