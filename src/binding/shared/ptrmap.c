/*
 * ptrmap.c - a small hash map keyed by address.
 *
 * Used where the binding needs identity semantics that Python dicts cannot
 * give cheaply or safely: the protect() registry (keyed by object identity,
 * operated on under a mutex that must never run Python code, so no dict) and
 * eternalize()'s visited set (millions of objects, no hashing callbacks).
 * Open addressing with linear probing; removed slots become tombstones that
 * a rehash drops. Memory comes from PyMem_Raw*, usable without a thread
 * state.
 */
#include "shared/shared.h"

#define TOMBSTONE ((void *)1)
#define MIN_CAPACITY 16

static size_t slot_of(const void *key, size_t capacity)
{
    /* Fibonacci hashing: objects are 16-byte aligned, so the low bits carry
     * nothing; the multiplication spreads the rest over the whole word. */
    uint64_t h = (uint64_t)(uintptr_t)key * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 32) & (capacity - 1);
}

static pxpy_ptrmap_slot_t *find(const pxpy_ptrmap_t *map, const void *key)
{
    if (map->capacity == 0)
        return NULL;
    size_t mask = map->capacity - 1;
    for (size_t i = slot_of(key, map->capacity);; i = (i + 1) & mask) {
        pxpy_ptrmap_slot_t *slot = &map->slots[i];
        if (slot->key == key)
            return slot;
        if (slot->key == NULL)
            return NULL;
    }
}

static int resize(pxpy_ptrmap_t *map, size_t capacity)
{
    pxpy_ptrmap_slot_t *slots = PyMem_RawCalloc(capacity, sizeof(*slots));
    if (slots == NULL)
        return -1;
    size_t mask = capacity - 1;
    for (size_t i = 0; i < map->capacity; i++) {
        pxpy_ptrmap_slot_t *old = &map->slots[i];
        if (old->key == NULL || old->key == TOMBSTONE)
            continue;
        size_t j = slot_of(old->key, capacity);
        while (slots[j].key != NULL)
            j = (j + 1) & mask;
        slots[j] = *old;
    }
    PyMem_RawFree(map->slots);
    map->slots = slots;
    map->capacity = capacity;
    map->used = map->live;
    return 0;
}

void *pxpy_ptrmap_get(const pxpy_ptrmap_t *map, const void *key)
{
    pxpy_ptrmap_slot_t *slot = find(map, key);
    return slot != NULL ? slot->value : NULL;
}

int pxpy_ptrmap_put(pxpy_ptrmap_t *map, void *key, void *value)
{
    if (find(map, key) != NULL)
        return 0;
    /* Keep the load (tombstones included) under 3/4 so probes stay short;
     * grow only when live keys need it, otherwise just drop tombstones. */
    if ((map->used + 1) * 4 > map->capacity * 3) {
        size_t capacity = map->capacity ? map->capacity : MIN_CAPACITY;
        while ((map->live + 1) * 2 > capacity)
            capacity *= 2;
        if (resize(map, capacity) < 0)
            return -1;
    }
    size_t mask = map->capacity - 1;
    size_t i = slot_of(key, map->capacity);
    while (map->slots[i].key != NULL && map->slots[i].key != TOMBSTONE)
        i = (i + 1) & mask;
    if (map->slots[i].key == NULL)
        map->used++;
    map->slots[i].key = key;
    map->slots[i].value = value;
    map->live++;
    return 1;
}

void *pxpy_ptrmap_remove(pxpy_ptrmap_t *map, const void *key)
{
    pxpy_ptrmap_slot_t *slot = find(map, key);
    if (slot == NULL)
        return NULL;
    void *value = slot->value;
    slot->key = TOMBSTONE;
    slot->value = NULL;
    map->live--;
    return value;
}

int pxpy_ptrmap_next(const pxpy_ptrmap_t *map, size_t *pos, void **key,
                     void **value)
{
    while (*pos < map->capacity) {
        pxpy_ptrmap_slot_t *slot = &map->slots[(*pos)++];
        if (slot->key != NULL && slot->key != TOMBSTONE) {
            *key = slot->key;
            *value = slot->value;
            return 1;
        }
    }
    return 0;
}

void pxpy_ptrmap_clear(pxpy_ptrmap_t *map)
{
    PyMem_RawFree(map->slots);
    map->slots = NULL;
    map->capacity = 0;
    map->live = 0;
    map->used = 0;
}
