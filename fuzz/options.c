/*
 * options.c - sanitizer defaults linked into every fuzz target, so the one-line command in
 * TESTING.md needs no environment variables.
 *
 * A header may legitimately ask for a KV cache of many gigabytes (seq_len and n_layers are
 * not bounded by the file's size in TLLM). The loader must then report "cannot allocate"
 * rather than crash, so allocations above 1 GB return NULL here, as calloc does on a machine
 * without the memory, instead of aborting the run as an out-of-memory finding.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1:max_allocation_size_mb=1024";
}
