// Loop devices for SafeSpace's disk-backed ephemeral storage (Resources/EphemeralStorage.swift):
// attach an image file to a free /dev/loopN with autoclear, so the device is released when
// its last mount goes away. ioctl(2) is variadic, which Swift cannot call.
#define _GNU_SOURCE
#include "CSafeSpace.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/loop.h>

int ss_loop_attach(int image_fd, int readonly, char *path, size_t path_len) {
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) return -1;
    for (int attempt = 0; attempt < 16; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0) {
            int e = errno;
            close(ctl);
            errno = e;
            return -1;
        }
        snprintf(path, path_len, "/dev/loop%d", n);
        int dev = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
        if (dev < 0) {
            if (errno == ENOENT) continue;  // udev has not made the node yet: try another
            int e = errno;
            close(ctl);
            errno = e;
            return -1;
        }
        // LOOP_CONFIGURE (Linux 5.8, loop(4)): the image and LO_FLAGS_AUTOCLEAR in one ioctl,
        // so a process killed at any moment never leaves a device attached without autoclear
        // (which nothing would release). Older kernels: LOOP_SET_FD, then LOOP_SET_STATUS64.
        struct loop_config config;
        memset(&config, 0, sizeof(config));
        config.fd = (unsigned int)image_fd;
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY : 0);
        if (ioctl(dev, LOOP_CONFIGURE, &config) == 0) {
            close(ctl);
            return dev;
        }
        if (errno == EBUSY) {
            close(dev);
            continue;  // another process took it between GET_FREE and CONFIGURE
        }
        if (errno != EINVAL && errno != ENOTTY) {
            int e = errno;
            close(dev);
            close(ctl);
            errno = e;
            return -1;
        }
        if (ioctl(dev, LOOP_SET_FD, image_fd) < 0) {
            int e = errno;
            close(dev);
            if (e == EBUSY) continue;  // another process took it between GET_FREE and SET_FD
            close(ctl);
            errno = e;
            return -1;
        }
        struct loop_info64 info;
        memset(&info, 0, sizeof(info));
        info.lo_flags = LO_FLAGS_AUTOCLEAR | (readonly ? LO_FLAGS_READ_ONLY : 0);
        if (ioctl(dev, LOOP_SET_STATUS64, &info) < 0) {
            int e = errno;
            ioctl(dev, LOOP_CLR_FD, 0);
            close(dev);
            close(ctl);
            errno = e;
            return -1;
        }
        close(ctl);
        return dev;  // keep open until mounted: autoclear fires when the last user goes
    }
    close(ctl);
    errno = EBUSY;
    return -1;
}

int ss_loop_clear(const char *device) {
    int dev = open(device, O_RDWR | O_CLOEXEC);
    if (dev < 0) return -1;
    int rc = ioctl(dev, LOOP_CLR_FD, 0);
    int e = errno;
    close(dev);
    errno = e;
    return rc;
}
