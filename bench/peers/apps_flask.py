"""The Flask application of bench/apps.py, served unchanged by every WSGI server.

GET /json      {"message": "Hello, World!"} through jsonify (TechEmpower's json)
GET /fortunes  the rows of apps_fortunes.py rendered by render_template

python -m pyparallel.http.server --app apps_flask:app
gunicorn --workers N --worker-class sync|gthread apps_flask:app
granian --interface wsgi --workers N apps_flask:app
"""

import apps_fortunes
from flask import Flask, jsonify, render_template

app = Flask(__name__, template_folder=apps_fortunes.TEMPLATES)


@app.route("/json")
def json_message():
    return jsonify(message="Hello, World!")


@app.route("/fortunes")
def fortunes():
    return render_template(apps_fortunes.TEMPLATE, fortunes=apps_fortunes.rows())
