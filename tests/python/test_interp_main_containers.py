"""The containers a main script makes at its top level are the main
interpreter's in every worker.

In mode "interpreters" each worker imports the main script again, and its
top level (``totals = px.dict()``) makes a container there too; the worker
then takes the main interpreter's container of the same name instead, so
that the program gives the answer it gives in modes "threads" and "gil".
Each program runs in a fresh process in the mode of this test run.
"""

from conftest import interpreters_mode, run_script

SHARED_PROGRAM = """
import pyparallel as px

totals = px.dict()
seen = px.list()
events = px.xlist()


def count(n):
    with px.write_lock(totals):
        totals["sum"] = totals.get("sum", 0) + n
    seen.append(n)
    events.push(n)
    return n


class Counter:
    def add(self, n):
        return count(n)


if __name__ == "__main__":
    futures = [px.submit_work(count, n) for n in range(1, 11)]
    futures += [px.submit_work(Counter().add, n) for n in range(11, 21)]
    px.run()
    print([f.result() for f in futures] == list(range(1, 21)))
    print(totals["sum"], sorted(seen) == list(range(1, 21)), len(events.flush()))
"""

MISMATCH_PROGRAM = """
import pyparallel as px

# The main interpreter binds the name to a plain dict, a worker to a shared
# one: the two would be different objects behind one name.
table = px.dict() if __name__ != "__main__" else {}


def look(n):
    return len(table) + n


if __name__ == "__main__":
    future = px.submit_work(look, 1)
    px.run()
    try:
        future.result()
    except Exception as exc:
        print(type(exc).__name__, "table" in str(exc))
    else:
        print("no error")
"""


def test_top_level_containers_of_the_main_script_are_shared_with_the_workers(tmp_path):
    assert run_script(tmp_path, SHARED_PROGRAM) == ["True", "210 True 20"]


def test_a_name_bound_to_a_container_only_in_the_workers_is_an_error(tmp_path):
    out = run_script(tmp_path, MISMATCH_PROGRAM)
    # Elsewhere there is one interpreter, and one object behind the name.
    assert out == (["ImportError True"] if interpreters_mode() else ["no error"])
