/*
 * test_bytebuf.c - the growable byte buffer shared by the engine and the
 * HTTP layer: first allocation sized to the bytes at hand, doubling growth,
 * exact reservations, prefix consumption, reset and trim that give large
 * buffers back, and requests too large to represent refused without
 * touching the buffer.
 */
#include "bytebuf.h"
#include "harness.h"

#include <errno.h>
#include <stdint.h>

TEST(test_first_allocation_is_small)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_append(&b, "", 0), 0);
    ASSERT_TRUE(b.data == NULL); /* nothing appended, nothing allocated */
    ASSERT_INT_EQ(px__bytebuf_append(&b, "GET / HTTP/1.1\r\n\r\n", 18), 0);
    ASSERT_UINT_CMP(b.cap, <=, 256);
    ASSERT_SPAN_EQ(b.data, b.len, "GET / HTTP/1.1\r\n\r\n");
    px__bytebuf_free(&b);
    ASSERT_TRUE(b.data == NULL);
    ASSERT_UINT_EQ(b.len, 0);
    ASSERT_UINT_EQ(b.cap, 0);
}

TEST(test_growth_keeps_contents)
{
    px__bytebuf_t b = {0};
    size_t reallocations = 0, last_cap = 0;
    for (unsigned i = 0; i < 100000; i++) {
        unsigned char byte = (unsigned char)(i * 7u);
        ASSERT_INT_EQ(px__bytebuf_append(&b, &byte, 1), 0);
        if (b.cap != last_cap) {
            reallocations++;
            last_cap = b.cap;
        }
    }
    ASSERT_UINT_EQ(b.len, 100000);
    for (unsigned i = 0; i < 100000; i++)
        if ((unsigned char)b.data[i] != (unsigned char)(i * 7u))
            TEST_FAIL("byte %u changed while the buffer grew", i);
    /* Doubling: 256 B to 128 KiB is 10 allocations, not one per append. */
    ASSERT_UINT_CMP(reallocations, <=, 12);
    px__bytebuf_free(&b);
}

TEST(test_reserve_then_fill)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_append(&b, "head", 4), 0);
    ASSERT_INT_EQ(px__bytebuf_reserve(&b, 5000), 0);
    ASSERT_UINT_CMP(b.cap - b.len, >=, 5000);
    char *before = b.data;
    memset(b.data + b.len, 'x', 5000);
    b.len += 5000;
    ASSERT_TRUE(b.data == before); /* reserved room is used without moving */
    ASSERT_SPAN_EQ(b.data, 8, "headxxxx");
    ASSERT_INT_EQ(px__bytebuf_reserve(&b, 0), 0);
    px__bytebuf_free(&b);
}

TEST(test_consume)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_append(&b, "0123456789", 10), 0);
    px__bytebuf_consume(&b, 3);
    ASSERT_SPAN_EQ(b.data, b.len, "3456789");
    px__bytebuf_consume(&b, 0);
    ASSERT_UINT_EQ(b.len, 7);
    px__bytebuf_consume(&b, 100); /* more than held: empties */
    ASSERT_UINT_EQ(b.len, 0);
    ASSERT_TRUE(b.data != NULL); /* the memory is kept for the next bytes */
    ASSERT_INT_EQ(px__bytebuf_append(&b, "ab", 2), 0);
    ASSERT_SPAN_EQ(b.data, b.len, "ab");
    px__bytebuf_free(&b);
}

TEST(test_reset_gives_large_buffers_back)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_append(&b, "small", 5), 0);
    px__bytebuf_reset(&b, 1024);
    ASSERT_UINT_EQ(b.len, 0);
    ASSERT_TRUE(b.data != NULL); /* under keep: kept */
    ASSERT_INT_EQ(px__bytebuf_reserve(&b, 4096), 0);
    px__bytebuf_reset(&b, 1024);
    ASSERT_TRUE(b.data == NULL); /* grew past keep: freed */
    ASSERT_UINT_EQ(b.cap, 0);
    px__bytebuf_free(&b);
}

TEST(test_reserve_exact_does_not_double)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_append(&b, "head", 4), 0);
    /* A declared length of 1 MiB + 1 would double to 2 MiB. */
    ASSERT_INT_EQ(px__bytebuf_reserve_exact(&b, (1u << 20) + 1), 0);
    ASSERT_UINT_EQ(b.cap, 4 + (1u << 20) + 1);
    ASSERT_SPAN_EQ(b.data, b.len, "head");
    /* Room already there: nothing changes. */
    char *data = b.data;
    ASSERT_INT_EQ(px__bytebuf_reserve_exact(&b, 100), 0);
    ASSERT_TRUE(b.data == data);
    ASSERT_UINT_EQ(b.cap, 4 + (1u << 20) + 1);
    ASSERT_INT_EQ(px__bytebuf_reserve_exact(&b, SIZE_MAX / 2), -ENOMEM);
    ASSERT_TRUE(b.data == data);
    px__bytebuf_free(&b);
}

TEST(test_trim_gives_memory_back)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_reserve_exact(&b, 1u << 20), 0);
    ASSERT_INT_EQ(px__bytebuf_append(&b, "0123456789", 10), 0);
    px__bytebuf_trim(&b, 1u << 20); /* within keep: kept */
    ASSERT_UINT_EQ(b.cap, 1u << 20);
    px__bytebuf_trim(&b, 8); /* more than keep held: kept */
    ASSERT_UINT_EQ(b.cap, 1u << 20);
    px__bytebuf_consume(&b, 6);
    px__bytebuf_trim(&b, 16);
    ASSERT_UINT_EQ(b.cap, 16);
    ASSERT_SPAN_EQ(b.data, b.len, "6789");
    px__bytebuf_consume(&b, 4);
    px__bytebuf_trim(&b, 8); /* empty: all of it */
    ASSERT_TRUE(b.data == NULL);
    ASSERT_UINT_EQ(b.cap, 0);
    px__bytebuf_free(&b);
}

TEST(test_impossible_sizes_are_refused)
{
    px__bytebuf_t b = {0};
    ASSERT_INT_EQ(px__bytebuf_append(&b, "keep", 4), 0);
    char *data = b.data;
    size_t cap = b.cap;
    ASSERT_INT_EQ(px__bytebuf_reserve(&b, SIZE_MAX), -ENOMEM);
    ASSERT_INT_EQ(px__bytebuf_reserve(&b, SIZE_MAX / 2), -ENOMEM);
    ASSERT_TRUE(b.data == data);
    ASSERT_UINT_EQ(b.cap, cap);
    ASSERT_SPAN_EQ(b.data, b.len, "keep");
    px__bytebuf_free(&b);
}

static const test_case_t tests[] = {
    TEST_CASE(first_allocation_is_small),
    TEST_CASE(growth_keeps_contents),
    TEST_CASE(reserve_then_fill),
    TEST_CASE(consume),
    TEST_CASE(reset_gives_large_buffers_back),
    TEST_CASE(reserve_exact_does_not_double),
    TEST_CASE(trim_gives_memory_back),
    TEST_CASE(impossible_sizes_are_refused),
};

TEST_MAIN(tests)
