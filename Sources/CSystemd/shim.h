// libsystemd (Debian: libsystemd-dev): sd_notify, sd_watchdog_enabled, sd_listen_fds
// (sd-daemon(3)) and sd_journal_sendv (sd_journal_print(3)). sd_journal_send itself is
// variadic, which Swift cannot call: the Audit module uses sd_journal_sendv. getxattr(2)
// (sys/xattr.h, not in Swift's Glibc module): systemd's trusted.delegate mark on cgroups.
#include <sys/uio.h>
#include <sys/xattr.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
