/* The CPU's vendor, for the few choices measured to differ between Intel
 * and AMD cores (NumPy and oneDNN choose per microarchitecture the same
 * way; docs/ops.md, "One avx512 variant for Intel and AMD").
 *
 * fw_cpu_is_intel(): 1 on an Intel x86 CPU (as the CPUID vendor string
 * says), 0 elsewhere (AMD, other x86 vendors, other architectures). */
#ifndef FW_CPU_VENDOR_H
#define FW_CPU_VENDOR_H

static inline int fw_cpu_is_intel(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") ? 1 : 0;
#else
    return 0;
#endif
}

#endif
