"""Studies: investigations whose findings are written in docs/, kept runnable where a
finding should be re-checked on other hardware (threads on a larger box, DINO-WM size and
reduced precision on a GPU, the rollout ladder). Each is a script over `benchmarks.harness`."""
