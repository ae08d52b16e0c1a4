// tryLockExclusive(fd) -> boolean: flock(fd, LOCK_EX | LOCK_NB). true: this open file now holds
// the lock; false: another open file (another process) holds it. The kernel drops the lock when
// the last descriptor of that open file closes, so a process that dies, even by kill -9, never
// leaves it behind. Node has no flock, hence this addon. Other failures throw with the errno name.
#include <node_api.h>
#include <errno.h>
#include <string.h>
#include <sys/file.h>

static napi_value try_lock_exclusive(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "tryLockExclusive(fd): fd must be a non-negative integer");
    return NULL;
  }
  int rc;
  do rc = flock(fd, LOCK_EX | LOCK_NB);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 && errno != EWOULDBLOCK) {
    int err = errno;
    napi_throw_error(env, err == EBADF ? "EBADF" : err == ENOLCK ? "ENOLCK" : "EIO", strerror(err));
    return NULL;
  }
  napi_value result;
  napi_get_boolean(env, rc == 0, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  napi_create_function(env, "tryLockExclusive", NAPI_AUTO_LENGTH, try_lock_exclusive, NULL, &fn);
  napi_set_named_property(env, exports, "tryLockExclusive", fn);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
