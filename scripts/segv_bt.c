/* A native backtrace on SIGSEGV / SIGBUS / SIGABRT, for crashes that Python's faulthandler shows only as a
 * Python stack (scripts/gpu_aot_bisect.sh). Preloaded into the process under test:
 *   gcc -shared -fPIC -O1 -o /tmp/segv_bt.so scripts/segv_bt.c && LD_PRELOAD=/tmp/segv_bt.so python3 ...
 * The handler writes the frames (library(+offset) or symbol+offset) to stderr, then re-raises the signal with
 * the default action, so the exit status stays the crash's. faulthandler, installed later, runs first and then
 * hands the signal on to this handler. */
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void on_fatal(int sig, siginfo_t *info, void *ctx) {
  (void)info;
  (void)ctx;
  void *frames[64];
  int n = backtrace(frames, 64);
  static const char head[] = "\n== native backtrace (segv_bt) ==\n";
  if (write(2, head, sizeof head - 1) < 0) { /* nothing to do */ }
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fatal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGABRT, &sa, NULL);
  void *warm[1];
  backtrace(warm, 1); /* loads libgcc_s now, not inside the handler */
}
