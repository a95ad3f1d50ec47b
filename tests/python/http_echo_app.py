"""The application of test_http_properties.py, in a module of its own: in mode
"interpreters" each worker imports the module of the class it serves, and
test_http_properties imports hypothesis, whose compiled extension
(hypothesis._native) does not load in subinterpreters.

It answers with a JSON document of what its handler saw (method, raw target,
raw and decoded path, query string, the X- header fields in order, the body in
base64), for the test to compare with what it sent.
"""

import base64

from pyparallel.http import HttpServer, Response, route


class EchoApp(HttpServer):
    @route("/{rest:path}", methods=("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"))
    def echo(self, request, rest):
        seen = {
            "method": request.method,
            "target": request.target,
            "raw_path": request.raw_path,
            "path": request.path,
            "rest": rest,
            "query_string": request.query_string,
            "fields": [[name, value] for name, value in request.headers.fields if name.lower().startswith("x-")],
            "body": base64.b64encode(request.body).decode(),
        }
        return Response(seen, headers={"X-Body-Length": str(len(request.body))})
