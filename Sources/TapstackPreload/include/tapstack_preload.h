#ifndef TAPSTACK_PRELOAD_H
#define TAPSTACK_PRELOAD_H
/* libtapstack-preload.so: loaded with LD_PRELOAD (see `tapstack exec`), it
 * turns the program's UDP/IPv4 sockets into sockets of a running tapstack,
 * reached through its socket service ($TAPSTACK_SOCKET). It interposes the
 * C library's socket calls and passes every other descriptor through. It has
 * no API of its own; this header documents what it does.
 *
 * Intercepted for AF_INET/SOCK_DGRAM sockets: socket, bind, connect, sendto,
 * sendmsg, sendmmsg, send, write, writev, recvfrom, recvmsg, recvmmsg, recv,
 * read, readv, getsockname, getpeername, setsockopt, getsockopt, fcntl
 * (F_DUPFD*), ioctl (FIONREAD), shutdown, close, dup, dup2, dup3.
 * Everything else (TCP, Unix sockets, IPv6, files, poll/select/epoll) is the
 * C library's: poll, select and epoll work on the intercepted sockets
 * because the descriptor the program holds is a real kernel socket.
 */
#endif
