"""A Flask app for test_wsgi.py: routes, JSON, form and multipart POST,
cookies, redirects, a streamed generator response and send_file (of the
file named by WSGI_TEST_FILE)."""

import os

from flask import Flask, Response, jsonify, redirect, request, send_file, stream_with_context, url_for

app = Flask(__name__)


@app.get("/")
def index():
    return "Hello from Flask"


@app.get("/items/<int:item_id>")
def item(item_id):
    return jsonify(id=item_id, query=request.args.get("q"))


@app.post("/json")
def echo_json():
    data = request.get_json()
    return jsonify(received=data, length=len(data["values"]))


@app.post("/form")
def form():
    return f"{request.form['name']} is {request.form['age']}"


@app.post("/upload")
def upload():
    upload = request.files["document"]
    return jsonify(name=upload.filename, size=len(upload.read()), note=request.form.get("note"))


@app.get("/cookie/set")
def set_cookie():
    response = Response("set")
    response.set_cookie("flavour", "oat")
    response.set_cookie("size", "large")
    return response


@app.get("/cookie/get")
def get_cookie():
    return f"{request.cookies.get('flavour')} {request.cookies.get('size')}"


@app.get("/old")
def old():
    return redirect(url_for("index"))


@app.get("/stream")
def stream():
    def rows():
        for number in range(5):
            yield f"row {number} of {request.args['name']}\n"

    return Response(stream_with_context(rows()), mimetype="text/plain")


@app.get("/file")
def file():
    return send_file(os.environ["WSGI_TEST_FILE"], mimetype="application/octet-stream")


@app.get("/boom")
def boom():
    raise RuntimeError("a Flask view failed")
