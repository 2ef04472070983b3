package agent

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
	"gopkg.in/natefinch/lumberjack.v2"
)

// Logging is the agent's logger, the level it logs at (changeable while
// it runs: `agent log-level`), and what to close at exit.
type Logging struct {
	Logger *zap.Logger
	// Level is shared by every output; setting it takes effect at once.
	Level zap.AtomicLevel
	// Close flushes the logger and closes the log file, if any.
	Close func() error
}

// NewLogger builds the agent's logger from its log settings: console on a
// terminal and json otherwise (format auto), to stderr, where journald or
// the service manager collects it, and also to log.file when set.
func NewLogger(c LogConfig) (*zap.Logger, error) {
	l, err := OpenLogging(c)
	if err != nil {
		return nil, err
	}
	return l.Logger, nil
}

// OpenLogging builds the agent's logging from its log settings. The file,
// when set, is written in JSON (whatever log.format says: it is for
// machines and for grep) and rotated by size with lumberjack, so that the
// logs never fill the disk.
func OpenLogging(c LogConfig) (*Logging, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Level)
	}
	level := zap.NewAtomicLevelAt(lvl)
	format := c.Format
	if format == "" || format == "auto" {
		format = "json"
		if term.IsTerminal(int(os.Stderr.Fd())) {
			format = "console"
		}
	}
	ec := encoderConfig()
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("log.format: %q is not auto, json or console", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(os.Stderr), level)
	closeFile := func() error { return nil }
	if c.File != "" {
		lj := &lumberjack.Logger{
			Filename:   c.File,
			MaxSize:    orInt(c.MaxSizeMB, DefaultLogMaxSizeMB),
			MaxBackups: orInt(c.MaxBackups, DefaultLogMaxBackups),
			MaxAge:     orInt(c.MaxAgeDays, DefaultLogMaxAgeDays),
			Compress:   true,
		}
		// Open it now, so that a wrong path is an error at start, not lost
		// at the first line.
		if _, err := lj.Write(nil); err != nil {
			return nil, fmt.Errorf("log.file: %w", err)
		}
		core = zapcore.NewTee(core, zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(lj), level))
		closeFile = lj.Close
	}
	log := zap.New(core)
	return &Logging{Logger: log, Level: level, Close: func() error {
		_ = log.Sync()
		return closeFile()
	}}, nil
}

func encoderConfig() zapcore.EncoderConfig {
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.MessageKey = "ts", "msg"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	return ec
}

func orInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
