/* The CPU's real arithmetic peak, measured: `peak_probe KIND SECONDS` runs a register-only loop of one
 * instruction kind (12 independent accumulators, more than latency × ports on current x86 cores) for about
 * SECONDS and prints the ops per second, counting 2 ops per multiply-add. bench/machine.py compiles it with the system C
 * compiler and runs one copy per physical core at once, so turbo under an all-core load, the vector units'
 * real width (Zen 4 runs a 512-bit op on two 256-bit halves) and the hypervisor are all in the figure.
 *
 * KIND: clock (1 dependent add per cycle: prints cycles per second), fp32 / bf16 / int8 with the suffix zmm or
 * ymm (vfmadd231ps, vdpbf16ps, vpdpbusd), int8-vex (AVX-VNNI's VEX-encoded vpdpbusd on ymm, the CPUs with AVX-VNNI
 * but no AVX-512), and int8-avx2 (vpmaddubsw + vpmaddwd + vpaddd: 32 multiply-adds per
 * three instructions, the AVX2 int8 dot product without VNNI).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REP12(op, a, b)                                                                       \
    op " %%" b "1, %%" b "2, %%" a "0\n\t" op " %%" b "1, %%" b "2, %%" a "3\n\t"            \
    op " %%" b "1, %%" b "2, %%" a "4\n\t" op " %%" b "1, %%" b "2, %%" a "5\n\t"            \
    op " %%" b "1, %%" b "2, %%" a "6\n\t" op " %%" b "1, %%" b "2, %%" a "7\n\t"            \
    op " %%" b "1, %%" b "2, %%" a "8\n\t" op " %%" b "1, %%" b "2, %%" a "9\n\t"            \
    op " %%" b "1, %%" b "2, %%" a "10\n\t" op " %%" b "1, %%" b "2, %%" a "11\n\t"          \
    op " %%" b "1, %%" b "2, %%" a "12\n\t" op " %%" b "1, %%" b "2, %%" a "13\n\t"

/* Registers start at zero (no denormal operands). */
#define ZERO_Z \
    "vpxord %%zmm0, %%zmm0, %%zmm0\n\t" "vpxord %%zmm1, %%zmm1, %%zmm1\n\t" "vpxord %%zmm2, %%zmm2, %%zmm2\n\t" "vpxord %%zmm3, %%zmm3, %%zmm3\n\t" \
    "vpxord %%zmm4, %%zmm4, %%zmm4\n\t" "vpxord %%zmm5, %%zmm5, %%zmm5\n\t" "vpxord %%zmm6, %%zmm6, %%zmm6\n\t" "vpxord %%zmm7, %%zmm7, %%zmm7\n\t" \
    "vpxord %%zmm8, %%zmm8, %%zmm8\n\t" "vpxord %%zmm9, %%zmm9, %%zmm9\n\t" "vpxord %%zmm10, %%zmm10, %%zmm10\n\t" "vpxord %%zmm11, %%zmm11, %%zmm11\n\t" \
    "vpxord %%zmm12, %%zmm12, %%zmm12\n\t" "vpxord %%zmm13, %%zmm13, %%zmm13\n\t"
#define ZERO_Y \
    "vpxor %%ymm0, %%ymm0, %%ymm0\n\t" "vpxor %%ymm1, %%ymm1, %%ymm1\n\t" "vpxor %%ymm2, %%ymm2, %%ymm2\n\t" "vpxor %%ymm3, %%ymm3, %%ymm3\n\t" \
    "vpxor %%ymm4, %%ymm4, %%ymm4\n\t" "vpxor %%ymm5, %%ymm5, %%ymm5\n\t" "vpxor %%ymm6, %%ymm6, %%ymm6\n\t" "vpxor %%ymm7, %%ymm7, %%ymm7\n\t" \
    "vpxor %%ymm8, %%ymm8, %%ymm8\n\t" "vpxor %%ymm9, %%ymm9, %%ymm9\n\t" "vpxor %%ymm10, %%ymm10, %%ymm10\n\t" "vpxor %%ymm11, %%ymm11, %%ymm11\n\t" \
    "vpxor %%ymm12, %%ymm12, %%ymm12\n\t" "vpxor %%ymm13, %%ymm13, %%ymm13\n\t"

#define LOOP(zeros, body, clobbers...) \
    __asm__ volatile(zeros "1:\n\t" body "dec %0\n\tjnz 1b\n\tvzeroupper\n\t" : "+r"(n) : : "cc", clobbers)

#define Z "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9", "zmm10", "zmm11", "zmm12", "zmm13"
#define Y "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm8", "ymm9", "ymm10", "ymm11", "ymm12", "ymm13"

__attribute__((target("avx512f"))) static void fp32_zmm(long n) { LOOP(ZERO_Z, REP12("vfmadd231ps", "zmm", "zmm"), Z); }
__attribute__((target("avx2,fma"))) static void fp32_ymm(long n) { LOOP(ZERO_Y, REP12("vfmadd231ps", "ymm", "ymm"), Y); }
__attribute__((target("avx512f,avx512bf16"))) static void bf16_zmm(long n) { LOOP(ZERO_Z, REP12("vdpbf16ps", "zmm", "zmm"), Z); }
__attribute__((target("avx512f,avx512vl,avx512bf16"))) static void bf16_ymm(long n) { LOOP(ZERO_Y, REP12("vdpbf16ps", "ymm", "ymm"), Y); }
__attribute__((target("avx512f,avx512vnni"))) static void int8_zmm(long n) { LOOP(ZERO_Z, REP12("vpdpbusd", "zmm", "zmm"), Z); }
__attribute__((target("avx512f,avx512vl,avx512vnni"))) static void int8_ymm(long n) { LOOP(ZERO_Y, REP12("vpdpbusd", "ymm", "ymm"), Y); }
__attribute__((target("avxvnni"))) static void int8_vex(long n) { LOOP(ZERO_Y, REP12("%{vex%} vpdpbusd", "ymm", "ymm"), Y); }

/* Four independent accumulators (ymm0, 3, 4, 5), each: ymm6 = maddubs(ymm1, ymm2); ymm6 = madd(ymm6, ymm7); acc += ymm6. */
#define AVX2_DOT(acc, t)                                                                       \
    "vpmaddubsw %%ymm1, %%ymm2, %%ymm" t "\n\tvpmaddwd %%ymm7, %%ymm" t ", %%ymm" t "\n\t"     \
    "vpaddd %%ymm" t ", %%ymm" acc ", %%ymm" acc "\n\t"
__attribute__((target("avx2"))) static void int8_avx2(long n) {
    LOOP(ZERO_Y, AVX2_DOT("0", "8") AVX2_DOT("3", "9") AVX2_DOT("4", "10") AVX2_DOT("5", "11"), Y);
}

static void clock_chain(long n) {
    long x = 0;
    __asm__ volatile("1:\n\tadd $1, %1\n\tadd $1, %1\n\tadd $1, %1\n\tadd $1, %1\n\tdec %0\n\tjnz 1b\n\t"
                     : "+r"(n), "+r"(x) : : "cc");
}

struct kind {
    const char *name;
    void (*loop)(long);
    double ops;  /* per iteration */
};

static const struct kind KINDS[] = {
    {"clock", clock_chain, 4},                 /* 4 dependent adds: 4 cycles */
    {"fp32-zmm", fp32_zmm, 12 * 16 * 2}, {"fp32-ymm", fp32_ymm, 12 * 8 * 2},
    {"bf16-zmm", bf16_zmm, 12 * 16 * 2 * 2}, {"bf16-ymm", bf16_ymm, 12 * 8 * 2 * 2},
    {"int8-zmm", int8_zmm, 12 * 64 * 2}, {"int8-ymm", int8_ymm, 12 * 32 * 2},
    {"int8-vex", int8_vex, 12 * 32 * 2}, {"int8-avx2", int8_avx2, 4 * 32 * 2},
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    double seconds = argc == 3 ? atof(argv[2]) : 0;
    for (size_t i = 0; argc == 3 && seconds > 0 && i < sizeof KINDS / sizeof KINDS[0]; i++) {
        if (strcmp(argv[1], KINDS[i].name) != 0) continue;
        const long chunk = 100000;  /* iterations between clock reads: well under a millisecond */
        long chunks = 0;
        double start = now(), elapsed;
        do {
            KINDS[i].loop(chunk);
            chunks++;
        } while ((elapsed = now() - start) < seconds);
        printf("%.6e\n", KINDS[i].ops * (double)chunk * (double)chunks / elapsed);
        return 0;
    }
    fprintf(stderr, "usage: peak_probe KIND SECONDS (KIND: clock, fp32-zmm, fp32-ymm, bf16-zmm, bf16-ymm, int8-zmm, "
                    "int8-ymm, int8-vex, int8-avx2; SECONDS > 0)\n");
    return 2;
}
