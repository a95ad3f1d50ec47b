"""A small JSON API over HTTP: notes kept in memory, shared by every worker.

    python examples/http_notes.py [--host 127.0.0.1] [--port 8080]
    python examples/http_notes.py --selftest

Routes (pyparallel.http: method names and @route, parameters as str):
    GET    /notes              every note, as a JSON list
    POST   /notes              body = the note's text; 201 with its id and Location
    GET    /notes/{note_id}    one note (404 when there is none)
    DELETE /notes/{note_id}    removes it (204)
    GET    /work               ~90 us of pure-Python work, like the benchmarks' "work" route

The notes live in a px.dict (its methods hold its lock; listing them holds
the read lock), and the next id in a list changed under px.write_lock:
requests of different connections run in parallel on the workers. Try it with curl:
    curl -d 'buy milk' http://127.0.0.1:8080/notes
    curl http://127.0.0.1:8080/notes

--selftest serves on a free port, has eight concurrent clients add, read and
delete notes, and checks every answer.
"""

import argparse
import http.client
import json
import sys

import pyparallel as px
from _selftest import run_clients, run_selftest, use_a_mode_that_shares_objects
from pyparallel.http import HttpServer, Response, route

notes = px.dict()
next_id = px.protect([1])


class Notes(HttpServer):
    @route("/notes", methods=("GET", "POST"))
    def all_notes(self, request):
        if request.method == "GET":
            with px.read_lock(notes):  # iterate with no writer halfway through
                listed = [{"id": int(key), "text": text} for key, text in notes.items()]
            return sorted(listed, key=lambda note: note["id"])
        text = request.body.decode("utf-8", "replace")
        with px.write_lock(next_id):
            note_id = next_id[0]
            next_id[0] += 1
        notes[str(note_id)] = text
        return Response({"id": note_id, "text": text}, 201, {"Location": f"/notes/{note_id}"})

    @route("/notes/{note_id}", methods=("GET", "DELETE"))
    def one_note(self, request, note_id):
        text = notes.get(note_id)
        if text is None:
            return Response({"error": f"no note {note_id}"}, 404)
        if request.method == "DELETE":
            notes.pop(note_id, None)
            return Response(status=204)
        return {"id": int(note_id), "text": text}

    def work(self, request):
        s = 0
        for i in range(3000):
            s += i * i
        return str(s)


def drive(port):
    def client(index):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

        def call(method, path, body=None):
            conn.request(method, path, body)
            response = conn.getresponse()
            return response.status, response.getheader("Location"), response.read()

        mine = []
        for i in range(20):
            status, location, body = call("POST", "/notes", f"client {index} note {i}".encode())
            created = json.loads(body)
            if status != 201 or location != f"/notes/{created['id']}":
                raise AssertionError(f"POST /notes: {status} {location} {body!r}")
            mine.append(created["id"])
        for note_id in mine[:10]:
            status, _, body = call("GET", f"/notes/{note_id}")
            if status != 200 or not json.loads(body)["text"].startswith(f"client {index} "):
                raise AssertionError(f"GET /notes/{note_id}: {status} {body!r}")
            if call("DELETE", f"/notes/{note_id}")[0] != 204:
                raise AssertionError(f"DELETE /notes/{note_id} failed")
            if call("GET", f"/notes/{note_id}")[0] != 404:
                raise AssertionError(f"note {note_id} still there after DELETE")
        if call("GET", "/work")[2] != str(sum(i * i for i in range(3000))).encode():
            raise AssertionError("GET /work: wrong sum")
        if call("PUT", "/notes")[0] != 405:
            raise AssertionError("PUT /notes is not 405")
        conn.close()

    run_clients(client, 8)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/notes")
    remaining = json.loads(conn.getresponse().read())
    conn.close()
    if len(remaining) != 80 or len({note["id"] for note in remaining}) != 80:
        raise AssertionError(f"{len(remaining)} notes remain, expected 80 distinct")
    return f"8 clients, 160 notes added, 80 deleted, mode {px.stats()['mode']}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--selftest", action="store_true", help="serve on a free port, check, exit")
    args = parser.parse_args(argv)
    use_a_mode_that_shares_objects("http_notes", "one dict of notes")

    server = px.server(args.host, 0 if args.selftest else args.port)
    px.register(server, Notes)
    host, port = server.sockname
    if args.selftest:
        return run_selftest("http_notes", lambda: drive(port))
    print(f"notes API on http://{host}:{port}/notes ({px.stats()['mode']} mode); Ctrl-C stops it", flush=True)
    px.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
