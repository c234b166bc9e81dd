"""The C sources' #include "..." graph, read from the sources themselves: it has no cycle, and
nothing the library is built from depends on the attention recorder (attnviz.h), which only
run.c uses: model.c offers a hook (model_observe_attention) and knows nothing of it.

Files: *.c and *.h at the top, tests/*.c and fuzz/*.c. A name is looked up beside the file
that includes it, then at the top (the compilers' -I.); a generated file (build/...) that is
not there yet is a leaf. <...> includes are the system's and left out.
"""
import glob
import os
import re

# Pure Python: the sanitizer pass of `make test` skips this module.
C_CODE = False

INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.M)


def include_graph():
    """{file: [files it includes]}, every path relative to the project root."""
    files = sorted(glob.glob("*.c") + glob.glob("*.h") + glob.glob("tests/*.c") +
                   glob.glob("fuzz/*.c"))
    graph = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            names = INCLUDE.findall(f.read())
        edges = []
        for name in names:
            beside = os.path.normpath(os.path.join(os.path.dirname(path), name))
            edges.append(beside if os.path.exists(beside) else os.path.normpath(name))
        graph[path] = edges
    return graph


def find_cycle(graph):
    """A list of files that include one another in a circle (the first repeated at the end),
    or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def reaches(graph, start, target):
    """Whether start includes target, directly or through other files."""
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, []):
            if nxt == target:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def library_sources():
    """The Makefile's LIB: the files every program links."""
    with open("Makefile", encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    m = re.search(r"^LIB\s*=(.*)$", text, re.M)
    assert m, "no LIB = ... line in the Makefile"
    return m.group(1).split()


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a.h": ["b.h"], "b.h": ["c.h"], "c.h": ["a.h"]}) == \
        ["a.h", "b.h", "c.h", "a.h"]
    assert find_cycle({"a.h": ["a.h"]}) == ["a.h", "a.h"]
    assert find_cycle({"a.c": ["b.h", "c.h"], "b.h": ["c.h"], "c.h": []}) is None


def test_no_include_cycle():
    graph = include_graph()
    assert "model.h" in graph and "model.h" in graph["model.c"], "the graph was not read"
    assert "args.h" in graph["fuzz/fuzz_args.c"], "a name looked up at the top was not found"
    assert "args.h" in graph["run.c"] and "args.h" in graph["args.c"], "run.c, args.c: no args.h"
    cycle = find_cycle(graph)
    assert cycle is None, "a circle of includes: " + " -> ".join(cycle)


def test_nothing_depends_on_attnviz():
    graph = include_graph()
    assert reaches(graph, "run.c", "attnviz.h"), "run.c should include attnviz.h"
    headers = [f for f in graph if f.endswith(".h") and f != "attnviz.h"]
    assert not [h for h in headers if reaches(graph, h, "attnviz.h")], \
        "a header includes attnviz.h"
    lib = library_sources()
    assert "model.c" in lib and "attnviz.c" in lib, lib
    users = [f for f in lib if f != "attnviz.c" and reaches(graph, f, "attnviz.h")]
    assert not users, f"library files that include attnviz.h: {users}"
