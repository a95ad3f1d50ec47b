"""A FastAPI app for test_asgi.py: path and query parameters, a pydantic
model in and out, a dependency, an async route awaiting asyncio.sleep.
`--app apps.fastapi_app:app`. pydantic-core refuses subinterpreters, so
mode interpreters serves it not (and says so in one line).
"""

import asyncio

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


def multiplier() -> int:
    return 3


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "q": q}


@app.post("/items")
async def create_item(item: Item, times: int = Depends(multiplier)):
    return {"name": item.name, "total": item.price * times, "tags": item.tags}


@app.get("/sleep")
async def sleep(s: float = 0.2):
    await asyncio.sleep(s)
    return {"slept": s}


@app.get("/sync")
def sync_route():
    return {"sync": True}
