/* container-disk: what every disk container of a launcher pod runs (docs/contracts.md,
 * "The launcher pod"). containerDisk and kernel-boot images are `FROM scratch`: they bring
 * no program, so the pod's init container `container-disk-binary` copies this one (from the
 * launcher image, /usr/local/bin/container-disk) into an emptyDir the disk containers run
 * it from. Static (gcc -static), so it needs nothing from the image.
 *
 *   container-disk --copy-to FILE   copy this program to FILE (mode 0755), exit 0
 *   container-disk --socket PATH    listen on the unix socket PATH, accept and close every
 *                                   connection; exit 0 on SIGTERM/SIGINT or once PATH is
 *                                   gone (the launcher removes it when it ends)
 *
 * virt-handler connects to PATH and reads SO_PEERCRED: the pid of this process, whose
 * /proc/<pid>/root is the image's file tree (where the disk is read). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static void on_signal(int sig) {
  (void)sig;
  _exit(0);
}

static int usage(void) {
  fputs("usage: container-disk --socket PATH | --copy-to FILE\n", stderr);
  return 2;
}

static int copy_self(const char *to) {
  int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (in < 0) {
    perror("container-disk: open /proc/self/exe");
    return 1;
  }
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", to) >= (int)sizeof tmp) {
    fputs("container-disk: --copy-to path too long\n", stderr);
    return 1;
  }
  int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (out < 0) {
    fprintf(stderr, "container-disk: create %s: %s\n", tmp, strerror(errno));
    return 1;
  }
  char buf[65536];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("container-disk: read /proc/self/exe");
      return 1;
    }
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(out, buf + off, (size_t)(n - off));
      if (w < 0) {
        if (errno == EINTR) continue;
        fprintf(stderr, "container-disk: write %s: %s\n", tmp, strerror(errno));
        return 1;
      }
      off += w;
    }
  }
  if (fchmod(out, 0755) != 0 || close(out) != 0 || rename(tmp, to) != 0) {
    fprintf(stderr, "container-disk: install %s: %s\n", to, strerror(errno));
    return 1;
  }
  return 0;
}

static int serve(const char *path) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "container-disk: socket path %s is longer than %zu bytes\n", path,
            sizeof addr.sun_path - 1);
    return 1;
  }
  strcpy(addr.sun_path, path);
  char dir[sizeof addr.sun_path];
  strcpy(dir, path);
  char *slash = strrchr(dir, '/');
  if (slash != NULL && slash != dir) {
    *slash = 0;
    /* The node creates the VMI's directory root's; virt-handler hands it to this pod's
     * non-root user (uid 107) moments later (docs/security.md): wait for that, as the
     * launcher does, up to 120 s. */
    for (int waited = 0;; waited++) {
      int made = mkdir(dir, 0700) == 0 || errno == EEXIST;
      if (made && access(dir, W_OK | X_OK) == 0) break;
      if (made || errno == EACCES) {
        if (waited == 0)
          fprintf(stderr, "container-disk: waiting for virt-handler to hand %s to uid %d\n",
                  dir, (int)geteuid());
        if (waited < 2400) {
          usleep(50000);
          continue;
        }
      }
      fprintf(stderr, "container-disk: create %s: %s\n", dir,
              made ? "not writable: is virt-handler running on this node?" : strerror(errno));
      return 1;
    }
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    perror("container-disk: socket");
    return 1;
  }
  unlink(path); /* a socket left by an earlier run of this container */
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 16) != 0) {
    fprintf(stderr, "container-disk: listen on %s: %s\n", path, strerror(errno));
    return 1;
  }
  fprintf(stderr, "container-disk: listening on %s\n", path);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, 1000);
    if (r > 0) {
      int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) close(c);
    }
    struct stat st;
    if (stat(path, &st) != 0) {
      fprintf(stderr, "container-disk: %s is gone; exiting\n", path);
      return 0;
    }
  }
}

int main(int argc, char **argv) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  if (argc != 3) return usage();
  if (strcmp(argv[1], "--copy-to") == 0) return copy_self(argv[2]);
  if (strcmp(argv[1], "--socket") == 0) return serve(argv[2]);
  return usage();
}
