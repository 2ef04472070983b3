//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// procStatus reads fields of /proc/PID/status in KiB (VmRSS, VmHWM,
// RssAnon, ...).
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
				out[k] = n
			}
		} else if len(fields) == 1 && k == "Threads" {
			if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
				out[k] = n
			}
		}
	}
	return out, s.Err()
}

// rssKiB is VmRSS of pid.
func rssKiB(pid int) (int64, error) {
	st, err := procStatus(pid)
	if err != nil {
		return 0, err
	}
	v, ok := st["VmRSS"]
	if !ok {
		return 0, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return v, nil
}

// cpuTime is the CPU time pid has used: user and system time from
// /proc/PID/stat (clock ticks of 10ms), and the more precise run time that
// the scheduler keeps per thread (/proc/PID/task/*/schedstat, in ns).
type cpuTime struct {
	User, System time.Duration // from stat, 10ms resolution
	Sched        time.Duration // sum over threads, ns resolution
}

// userHZ is the unit of /proc/PID/stat times: 100 on every Linux
// architecture Go supports.
const userHZ = 100

func readCPU(pid int) (cpuTime, error) {
	var c cpuTime
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return c, err
	}
	// The command name is in parentheses and may hold spaces: split after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return c, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return c, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	c.User = time.Duration(ut) * time.Second / userHZ
	c.System = time.Duration(st) * time.Second / userHZ
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread ended
		}
		if fs := strings.Fields(string(b)); len(fs) > 0 {
			n, _ := strconv.ParseInt(fs[0], 10, 64)
			c.Sched += time.Duration(n)
		}
	}
	return c, nil
}

func (c cpuTime) sub(o cpuTime) cpuTime {
	return cpuTime{User: c.User - o.User, System: c.System - o.System, Sched: c.Sched - o.Sched}
}

func kib(n int64) string {
	if n >= 10*1024 {
		return fmt.Sprintf("%.1f MiB", float64(n)/1024)
	}
	return fmt.Sprintf("%d KiB", n)
}
