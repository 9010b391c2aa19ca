/* .npy files NumPy can load (header layout checked byte by byte) and CSV with index columns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers.h"
#include "loupe/error.h"
#include "loupe/fileio.h"
#include "loupe/npy.h"

static void npy_header_is_what_numpy_reads(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[600];
    snprintf(path, sizeof path, "%s/a.npy", dir);
    float data[6] = {1, 2, 3, 4, 5, -0.5f};
    int shape[2] = {2, 3};
    assert_int_equal(lp_npy_write(path, data, shape, 2), LP_OK);
    char *buf;
    size_t len;
    assert_int_equal(lp_file_read_new(path, &buf, &len), LP_OK);
    assert_memory_equal(buf, "\x93NUMPY\x01\x00", 8);
    size_t hlen = (unsigned char)buf[8] | (size_t)(unsigned char)buf[9] << 8;
    assert_int_equal((10 + hlen) % 64, 0);           /* data starts aligned */
    assert_int_equal(buf[10 + hlen - 1], '\n');
    assert_non_null(strstr(buf + 10, "'descr': '<f4'"));
    assert_non_null(strstr(buf + 10, "'fortran_order': False"));
    assert_non_null(strstr(buf + 10, "'shape': (2, 3)"));
    assert_int_equal(len, 10 + hlen + sizeof data);
    assert_memory_equal(buf + 10 + hlen, data, sizeof data);
    free(buf);
    /* 1-d shapes are tuples with a trailing comma */
    int one[1] = {6};
    assert_int_equal(lp_npy_write(path, data, one, 1), LP_OK);
    assert_int_equal(lp_file_read_new(path, &buf, &len), LP_OK);
    assert_non_null(strstr(buf + 10, "'shape': (6, )"));
    free(buf);
    rm_tree(dir);
}

static void csv_has_index_columns_and_full_precision(void **state) {
    (void)state;
    char *dir = make_temp_dir(), path[600];
    snprintf(path, sizeof path, "%s/a.csv", dir);
    float data[8] = {0.1f, 2, 3, 4, 5, 6, 7, 8};
    int shape[3] = {2, 2, 2};
    const char *names[] = {"head", "query"};
    assert_int_equal(lp_csv_write(path, data, shape, 3, names), LP_OK);
    char *buf;
    assert_int_equal(lp_file_read_new(path, &buf, NULL), LP_OK);
    assert_string_equal(buf, "head,query,0,1\r\n0,0,0.100000001,2\r\n0,1,3,4\r\n1,0,5,6\r\n1,1,7,8\r\n");
    free(buf);
    rm_tree(dir);
}

static void unwritable_path_is_an_io_error(void **state) {
    (void)state;
    float x = 1;
    int shape[1] = {1};
    assert_int_equal(lp_npy_write("/nonexistent/dir/a.npy", &x, shape, 1), LP_EIO);
    assert_non_null(strstr(lp_errmsg(), "/nonexistent/dir/a.npy"));
    assert_int_equal(lp_csv_write("/nonexistent/dir/a.csv", &x, shape, 1, NULL), LP_EIO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(npy_header_is_what_numpy_reads),
        cmocka_unit_test(csv_has_index_columns_and_full_precision),
        cmocka_unit_test(unwritable_path_is_an_io_error),
    };
    return cmocka_run_group_tests_name("npy", tests, NULL, NULL);
}
