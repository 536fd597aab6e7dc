#include "CDaemon.h"

#include <sys/xattr.h>

ssize_t sd_flistxattr(int fd, char *list, size_t size) { return flistxattr(fd, list, size); }
