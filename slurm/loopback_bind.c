/* Preloaded into slurmdbd by start_cluster.sh. Slurm 22.05's slurmdbd listens on every interface and
 * has no setting to name one address (DbdAddr only names it to clients), so this turns its listening
 * bind to the wildcard address into a bind to loopback: 0.0.0.0 -> 127.0.0.1, :: -> ::1. Binds to a
 * named address, and wildcard binds of port 0 (an outgoing socket's local end), are left as asked. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

typedef int (*bind_function)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *address, socklen_t length) {
    static bind_function real_bind;
    if (!real_bind && !(real_bind = (bind_function)dlsym(RTLD_NEXT, "bind"))) {
        errno = ENOSYS;
        return -1;
    }
    if (address && address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in ipv4 = *(const struct sockaddr_in *)address;
        if (ipv4.sin_addr.s_addr == htonl(INADDR_ANY) && ipv4.sin_port != 0) {
            ipv4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&ipv4, sizeof ipv4);
        }
    } else if (address && address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 ipv6 = *(const struct sockaddr_in6 *)address;
        if (IN6_IS_ADDR_UNSPECIFIED(&ipv6.sin6_addr) && ipv6.sin6_port != 0) {
            ipv6.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *)&ipv6, sizeof ipv6);
        }
    }
    return real_bind(fd, address, length);
}
