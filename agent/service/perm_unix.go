//go:build unix

package service

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// readableWarning says, when the config file cannot be read by the
// service's user, how to fix it; "" when it can.
func readableWarning(path, name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	mode := fi.Mode().Perm()
	switch {
	case int(st.Uid) == uid && mode&0o400 != 0:
		return ""
	case int(st.Gid) == gid && mode&0o040 != 0:
		return ""
	}
	return fmt.Sprintf("the user %s cannot read %s; run: chown root:%s %s && chmod 0640 %s", name, path, u.Username, path, path)
}
