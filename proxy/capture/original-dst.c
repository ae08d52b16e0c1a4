// originalDst(fd) -> [family, address, port]: the destination a TCP connection was addressed to
// before an iptables REDIRECT/DNAT rewrote it (netfilter's SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST
// for IPv6). Node has no getsockopt, hence this addon. Throws an Error whose `code` is the errno
// name (ENOENT: the connection has no NAT record, i.e. it was not redirected).
#include <node_api.h>
#include <errno.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <linux/netfilter_ipv4.h>

#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

static napi_value throw_errno(napi_env env, int err) {
  const char *code = err == ENOENT ? "ENOENT" : err == ENOPROTOOPT ? "ENOPROTOOPT" : err == EBADF ? "EBADF" : err == ENOTSOCK ? "ENOTSOCK" : "EIO";
  napi_throw_error(env, code, strerror(err));
  return NULL;
}

static napi_value original_dst(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "originalDst(fd): fd must be a non-negative integer");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  struct sockaddr_storage local;
  socklen_t local_len = sizeof(local);
  if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0) return throw_errno(env, errno);
  // A dual-stack listener sees IPv4 clients as v4-mapped IPv6; their NAT record is IPv4.
  int v6 = local.ss_family == AF_INET6 && !IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr);
  int rc = v6
    ? getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len)
    : getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len);
  if (rc != 0) return throw_errno(env, errno);

  char text[INET6_ADDRSTRLEN];
  int port;
  int family;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
    port = ntohs(a->sin6_port);
    family = 6;
  } else {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
    port = ntohs(a->sin_port);
    family = 4;
  }
  napi_value result, v_family, v_address, v_port;
  napi_create_array_with_length(env, 3, &result);
  napi_create_int32(env, family, &v_family);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v_address);
  napi_create_int32(env, port, &v_port);
  napi_set_element(env, result, 0, v_family);
  napi_set_element(env, result, 1, v_address);
  napi_set_element(env, result, 2, v_port);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "originalDst", NAPI_AUTO_LENGTH, original_dst, NULL, &fn);
  napi_set_named_property(env, exports, "originalDst", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
