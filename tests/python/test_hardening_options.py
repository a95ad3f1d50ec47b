"""OPTIONS * is about the server, not a resource (RFC 9110 §9.3.7): the C
layer answers it 200 with Allow and no content, where a request for "*"
used to reach the routes and get 404. The asterisk with any other method is
a malformed target (400)."""

from http_helpers import Client, serve_http
from pyparallel.http import HttpServer

IMPLEMENTED = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]


class Site(HttpServer):
    def hello(self, request):
        return "hello"


def test_options_asterisk_lists_the_methods(rt):
    port = serve_http(rt, Site)

    def driver():
        with Client(port) as client:
            answers = [client.request("OPTIONS", "*") for _ in range(2)]
            # The connection stays open for requests about resources.
            answers.append(client.request("GET", "/hello"))
            return answers

    first, second, hello = rt.run(driver)
    for answer in (first, second):
        assert answer.status == 200, answer
        assert answer.header("Content-Length") == "0"
        assert answer.body == b""
        assert [m.strip() for m in answer.header("Allow").split(",")] == IMPLEMENTED
        assert answer.header("Connection") is None
    assert (hello.status, hello.body) == (200, b"hello")


def test_asterisk_with_another_method_is_a_bad_request(rt):
    port = serve_http(rt, Site)

    def driver():
        with Client(port) as client:
            answer = client.request("GET", "*")
            return answer, client.at_eof()

    answer, closed = rt.run(driver)
    assert answer.status == 400
    assert answer.header("Connection") == "close"
    assert closed
