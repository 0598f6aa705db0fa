/* The sandbox ("pause") container of every pod on the real node: it holds the pod's
 * namespaces, reaps the zombies it inherits as PID 1, and exits on SIGTERM/SIGINT.
 * Built static (gcc -static) by hack/build-node.sh into the image ferrovirt.local/pause. */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  (void)argv;
  if (argc > 1) {
    puts("pause: holds a pod's namespaces until SIGTERM; takes no arguments");
    return 0;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);
  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGCHLD) {
      while (waitpid(-1, NULL, WNOHANG) > 0) {
      }
    } else {
      return 0;
    }
  }
}
