/*
 * Presents this CPU to one process as an x86-64-v3 CPU (AVX2 and FMA, no AVX-512, no AMX, no
 * AVX-VNNI), so that every library in it picks the kernels it would pick on an AVX2-only host:
 * candle-serving's own dispatch, onnxruntime's MLAS, PyTorch's. It is a benchmarking aid for
 * hosts with AVX-512 when no AVX2-only host is at hand; the caches, memory and clock stay this
 * host's, so it measures the instruction sets, not another machine.
 *
 * How: the constructor asks the kernel to make the CPUID instruction fault in this process
 * (arch_prctl ARCH_SET_CPUID, where the CPU has "cpuid_fault"). The SIGSEGV that follows each
 * CPUID is caught, the real CPUID is run with faulting switched off for that one instruction,
 * the feature bits above x86-64-v3 are cleared from the answer, and execution resumes after the
 * instruction. Threads and forked children inherit the faulting; exec clears it, and LD_PRELOAD
 * sets it up again in the new image. Any other SIGSEGV is passed on as if the shim were absent.
 *
 * What it cannot reach: CPUID executed before this constructor runs (the dynamic loader's own
 * choice of glibc's string functions), and XGETBV, which does not fault. Libraries check CPUID
 * before XCR0, so they take the masked answer.
 *
 * Build and use: scripts/as_x86_64_v3.sh COMMAND... (compiles this file once into .cache).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

/* Leaf 7, subleaf 0. */
#define L7_EBX_CLEAR                                                                          \
    ((1u << 16) /* AVX512F */ | (1u << 17) /* AVX512DQ */ | (1u << 21) /* AVX512_IFMA */ |   \
     (1u << 26) /* AVX512PF */ | (1u << 27) /* AVX512ER */ | (1u << 28) /* AVX512CD */ |     \
     (1u << 30) /* AVX512BW */ | (1u << 31) /* AVX512VL */)
#define L7_ECX_CLEAR                                                                          \
    ((1u << 1) /* AVX512_VBMI */ | (1u << 6) /* AVX512_VBMI2 */ |                            \
     (1u << 11) /* AVX512_VNNI */ | (1u << 12) /* AVX512_BITALG */ |                         \
     (1u << 14) /* AVX512_VPOPCNTDQ */)
#define L7_EDX_CLEAR                                                                          \
    ((1u << 2) /* AVX512_4VNNIW */ | (1u << 3) /* AVX512_4FMAPS */ |                         \
     (1u << 8) /* AVX512_VP2INTERSECT */ | (1u << 22) /* AMX_BF16 */ |                       \
     (1u << 23) /* AVX512_FP16 */ | (1u << 24) /* AMX_TILE */ | (1u << 25) /* AMX_INT8 */)
/* Leaf 7, subleaf 1. */
#define L7S1_EAX_CLEAR ((1u << 4) /* AVX_VNNI */ | (1u << 5) /* AVX512_BF16 */)

static int set_cpuid_faulting(int on) {
    /* ARCH_SET_CPUID's argument is "CPUID allowed": 0 makes it fault. */
    return (int)syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

static void masked_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t r[4]) {
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    if (leaf == 7 && subleaf == 0) {
        r[1] &= ~L7_EBX_CLEAR;
        r[2] &= ~L7_ECX_CLEAR;
        r[3] &= ~L7_EDX_CLEAR;
    } else if (leaf == 7 && subleaf == 1) {
        r[0] &= ~L7S1_EAX_CLEAR;
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t r[4];
        set_cpuid_faulting(0);
        masked_cpuid((uint32_t)g[REG_RAX], (uint32_t)g[REG_RCX], r);
        set_cpuid_faulting(1);
        /* CPUID writes the low 32 bits and zeroes the high ones. */
        g[REG_RAX] = r[0];
        g[REG_RBX] = r[1];
        g[REG_RCX] = r[2];
        g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    /* Not ours: fall back to the default action, which the returning fault then takes. */
    signal(sig, SIG_DFL);
}

__attribute__((constructor)) static void x86_64_v3_init(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid_faulting(1) != 0) {
        fprintf(stderr, "x86_64_v3: cannot make CPUID fault here (no cpuid_fault?): %s\n",
                strerror(errno));
        _exit(97);
    }
    /* Check the answer through the trap itself before anything relies on it. */
    uint32_t a, b, c, d;
    __cpuid_count(7, 0, a, b, c, d);
    (void)a;
    (void)c;
    (void)d;
    if (b & (1u << 16)) {
        fprintf(stderr, "x86_64_v3: CPUID still reports AVX512F; refusing to run\n");
        _exit(97);
    }
}
