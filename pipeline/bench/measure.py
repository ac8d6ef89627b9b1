"""How bench measures a command: its own process, its wall time and its own peak resident memory."""

# Run as `python -c MEASURE PROGRAM ARGS...`: runs PROGRAM as __main__, then writes "MEASURE <exit code>
# <seconds> <VmHWM kB>" on stderr.
MEASURE = """
import runpy, sys, time
sys.argv = sys.argv[1:]
t = time.perf_counter()
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
# VmHWM: this process's own peak RSS (ru_maxrss would carry the parent's across exec)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
sys.stderr.write(f"\\nMEASURE {code} {time.perf_counter() - t} {hwm}\\n")
"""
