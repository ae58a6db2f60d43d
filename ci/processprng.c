/* A stand-in for Windows' bcryptprimitives.dll, which Wine 8.0 lacks.
 *
 * Rust's std (1.78+) on Windows gets its random seeds from
 * bcryptprimitives!ProcessPrng. This DLL exports that one function on top of
 * RtlGenRandom (advapi32!SystemFunction036), which Wine has. It is built by
 * ci/wine-setup.sh and copied into the Wine prefix by ci/wine-runner.sh; it is
 * never used on real Windows. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
