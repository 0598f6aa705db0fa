/* Ferrovirt test guest: a DHCPv6 client for one address (busybox has no udhcpc6).
 *   dhcp6c IFACE [TRIES]
 * Sends a SOLICIT with rapid commit (RFC 8415 section 18.2.1) from [link-local]:546 to
 * ff02::1:2:547 on IFACE once a second, up to TRIES times (default 60); an ADVERTISE
 * (a server without rapid commit) is answered with a REQUEST; on a REPLY
 * with an IA_NA address prints "ADDRESS SERVER" (the server's link-local address, the
 * router on the link: masquerade's bridge) and exits 0; exits 1 without one. The caller
 * (rcS) configures the address and the default route. Built static by
 * hack/build-guest-images.sh. */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static size_t opt(unsigned char *p, unsigned code, const void *data, unsigned len) {
  p[0] = code >> 8; p[1] = code; p[2] = len >> 8; p[3] = len;
  if (len) memcpy(p + 4, data, len);
  return 4 + len;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: dhcp6c IFACE [TRIES]\n"); return 2; }
  int tries = argc > 2 ? atoi(argv[2]) : 60;
  unsigned ifindex = if_nametoindex(argv[1]);
  if (!ifindex) { perror("if_nametoindex"); return 1; }
  int s = socket(AF_INET6, SOCK_DGRAM, 0);
  if (s < 0) { perror("socket"); return 1; }
  setsockopt(s, SOL_SOCKET, SO_BINDTODEVICE, argv[1], strlen(argv[1]) + 1);
  struct sockaddr_in6 me = {.sin6_family = AF_INET6, .sin6_port = htons(546)};
  /* The link-local address may still be missing (link not up yet): retry the bind. */
  int bound = -1;
  for (int i = 0; i < tries && (bound = bind(s, (void *)&me, sizeof me)) < 0; i++) sleep(1);
  if (bound < 0) { perror("bind"); return 1; }
  struct timeval tv = {.tv_sec = 1};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  /* Client DUID: DUID-LL of the interface's MAC. */
  unsigned char duid[10] = {0, 3, 0, 1};
  char path[128];
  snprintf(path, sizeof path, "/sys/class/net/%s/address", argv[1]);
  FILE *f = fopen(path, "r");
  unsigned m[6] = {0};
  if (f) { if (fscanf(f, "%x:%x:%x:%x:%x:%x", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6) memset(m, 0, sizeof m); fclose(f); }
  for (int i = 0; i < 6; i++) duid[4 + i] = m[i];

  unsigned char msg[512];
  unsigned char xid[3] = {(unsigned char)getpid(), (unsigned char)(getpid() >> 8), 0x6c};
  size_t n = 0;
  msg[n++] = 1; /* SOLICIT */
  memcpy(msg + n, xid, 3); n += 3;
  n += opt(msg + n, 1, duid, sizeof duid);                  /* CLIENTID */
  unsigned char ia[12] = {0, 0, 0, 1};                      /* IAID 1, T1 = T2 = 0 */
  n += opt(msg + n, 3, ia, sizeof ia);                      /* IA_NA */
  unsigned char elapsed[2] = {0, 0};
  n += opt(msg + n, 8, elapsed, sizeof elapsed);            /* ELAPSED_TIME */
  n += opt(msg + n, 14, NULL, 0);                           /* RAPID_COMMIT */

  struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_port = htons(547), .sin6_scope_id = ifindex};
  inet_pton(AF_INET6, "ff02::1:2", &to.sin6_addr);
  for (int t = 0; t < tries; t++) {
    if (sendto(s, msg, n, 0, (void *)&to, sizeof to) < 0) { sleep(1); continue; }
    unsigned char buf[1500];
    struct sockaddr_in6 from;
    socklen_t fl = sizeof from;
    ssize_t r = recvfrom(s, buf, sizeof buf, 0, (void *)&from, &fl);
    if (r < 4 || memcmp(buf + 1, xid, 3)) continue;
    if (buf[0] == 2 /* ADVERTISE: a server without rapid commit (passt) */ && msg[0] == 1) {
      /* REQUEST its address: our client ID, its server ID and IA_NA. */
      n = 0;
      msg[n++] = 3;
      memcpy(msg + n, xid, 3); n += 3;
      n += opt(msg + n, 1, duid, sizeof duid);
      n += opt(msg + n, 8, elapsed, sizeof elapsed);
      for (ssize_t i = 4; i + 4 <= r;) {
        unsigned code = buf[i] << 8 | buf[i + 1], len = buf[i + 2] << 8 | buf[i + 3];
        if (i + 4 + (ssize_t)len > r || n + 4 + len > sizeof msg) break;
        if (code == 2 || code == 3) n += opt(msg + n, code, buf + i + 4, len);
        i += 4 + len;
      }
      t--; /* the REQUEST goes out at once */
      continue;
    }
    if (buf[0] != 7 /* REPLY */) continue;
    /* Find IA_NA -> IAADDR. */
    for (ssize_t i = 4; i + 4 <= r;) {
      unsigned code = buf[i] << 8 | buf[i + 1], len = buf[i + 2] << 8 | buf[i + 3];
      if (i + 4 + (ssize_t)len > r) break;
      if (code == 3 && len >= 12) {
        for (unsigned j = 12; j + 4 <= len;) {
          unsigned char *o = buf + i + 4 + j;
          unsigned c = o[0] << 8 | o[1], l = o[2] << 8 | o[3];
          if (j + 4 + l > len) break;
          if (c == 5 && l >= 24) {
            char addr[INET6_ADDRSTRLEN], server[INET6_ADDRSTRLEN];
            inet_ntop(AF_INET6, o + 4, addr, sizeof addr);
            inet_ntop(AF_INET6, &from.sin6_addr, server, sizeof server);
            printf("%s %s\n", addr, server);
            return 0;
          }
          j += 4 + l;
        }
      }
      i += 4 + len;
    }
  }
  return 1;
}
