"""A Starlette app for test_asgi.py: async routes awaiting asyncio.sleep, a
JSON and a form route, a template, streaming and file responses, a
background task and lifespan state. `--app apps.starlette_app:app`.

What the tests must see from inside the server (the lifespan, the
background task) is appended to the file named by ASGI_TEST_LOG.
"""

import asyncio
import contextlib
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route
from starlette.templating import Jinja2Templates

HERE = os.path.dirname(os.path.abspath(__file__))
templates = Jinja2Templates(directory=os.path.join(HERE, "templates"))


def note(line):
    with open(os.environ["ASGI_TEST_LOG"], "a") as log:
        log.write(line + "\n")


@contextlib.asynccontextmanager
async def lifespan(app):
    note("starlette startup")
    yield {"greeting": "hello from the lifespan"}
    note("starlette shutdown")


async def home(request):
    return JSONResponse({"greeting": request.state.greeting, "path": request.url.path})


async def sleep(request):
    await asyncio.sleep(float(request.query_params.get("s", "0.2")))
    return PlainTextResponse("slept")


async def items(request):
    return JSONResponse({"item": request.path_params["item_id"], "q": request.query_params.get("q")})


async def form(request):
    data = await request.form()
    upload = data["upload"]
    content = await upload.read()
    return JSONResponse({"name": data["name"], "filename": upload.filename, "size": len(content)})


async def cookie(request):
    response = PlainTextResponse(f"seen {request.cookies.get('visits', '0')}")
    response.set_cookie("visits", str(int(request.cookies.get("visits", "0")) + 1))
    return response


async def redirect(request):
    return RedirectResponse("/", status_code=302)


async def stream(request):
    async def numbers():
        for i in range(5):
            await asyncio.sleep(0.01)
            yield f"{i}\n"

    return StreamingResponse(numbers(), media_type="text/plain")


async def file(request):
    return FileResponse(os.environ["ASGI_TEST_FILE"])


async def background(request):
    async def later(tag):
        await asyncio.sleep(0.2)
        note(f"background {tag}")

    return PlainTextResponse("queued", background=BackgroundTask(later, request.query_params.get("tag", "")))


async def fortunes(request):
    rows = [{"id": i, "message": f"fortune <{i}>"} for i in range(1, 4)]
    return templates.TemplateResponse(request, "fortunes.html", {"fortunes": rows})


async def fails(request):
    raise RuntimeError("a Starlette view that fails")


app = Starlette(
    routes=[
        Route("/", home),
        Route("/sleep", sleep),
        Route("/items/{item_id:int}", items),
        Route("/form", form, methods=["POST"]),
        Route("/cookie", cookie),
        Route("/redirect", redirect),
        Route("/stream", stream),
        Route("/file", file),
        Route("/background", background),
        Route("/fortunes", fortunes),
        Route("/fails", fails),
    ],
    lifespan=lifespan,
)
