"""The Starlette application of bench/apps.py, served unchanged by every ASGI server.

  GET /json      {"message": "Hello, World!"} as a JSONResponse (TechEmpower's json)
  GET /fortunes  the rows of apps_fortunes.py rendered by Jinja2Templates
  GET /sleep     awaits asyncio.sleep(0.01), then answers: a handler waiting
                 on I/O, so that a worker must serve its other connections
                 meanwhile (measured at 256 connections)

Every endpoint is a coroutine function, as Starlette applications are written
for speed (a plain function would be run in anyio's thread pool).

  python -m pyparallel.http.server --app apps_starlette:app
  uvicorn --workers N --loop uvloop --http httptools apps_starlette:app
  granian --interface asgi --workers N apps_starlette:app
"""

import asyncio

import apps_fortunes
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

SLEEP_S = 0.01

templates = Jinja2Templates(directory=apps_fortunes.TEMPLATES)


async def json_message(request):
    return JSONResponse({"message": "Hello, World!"})


async def fortunes(request):
    return templates.TemplateResponse(request, apps_fortunes.TEMPLATE, {"fortunes": apps_fortunes.rows()})


async def sleep(request):
    await asyncio.sleep(SLEEP_S)
    return PlainTextResponse("slept")


app = Starlette(
    routes=[
        Route("/json", json_message),
        Route("/fortunes", fortunes),
        Route("/sleep", sleep),
    ]
)
