package controlplane

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"gopkg.in/natefinch/lumberjack.v2"
)

// LogConfig is the log section of the control plane's config.
type LogConfig struct {
	// Format is auto, json or console; Level debug, info, warn or error.
	Format string `yaml:"format"`
	Level  string `yaml:"level"`
	// File, when set, receives the logs too (in JSON), rotated by size:
	// MaxSizeMB per file (default 50), MaxBackups old files (default 5)
	// kept at most MaxAgeDays (default 30), compressed.
	File       string `yaml:"file"`
	MaxSizeMB  int    `yaml:"max_size_mb"`
	MaxBackups int    `yaml:"max_backups"`
	MaxAgeDays int    `yaml:"max_age_days"`
}

// OpenLog builds the control plane's logger from c: NewLogger's output to
// stderr, plus the rotated file when c.File is set. close flushes it and
// closes the file.
func OpenLog(c LogConfig) (log *zap.Logger, close func() error, err error) {
	if c.Level == "" {
		c.Level = "info"
	}
	log, err = NewLogger(c.Format, c.Level)
	if err != nil {
		return nil, nil, err
	}
	if c.File == "" {
		return log, func() error { _ = log.Sync(); return nil }, nil
	}
	for _, v := range []struct {
		name string
		v    int
		max  int
	}{{"max_size_mb", c.MaxSizeMB, 10240}, {"max_backups", c.MaxBackups, 1000}, {"max_age_days", c.MaxAgeDays, 3650}} {
		if v.v < 0 || v.v > v.max {
			return nil, nil, fmt.Errorf("log.%s: %d is outside 0..%d", v.name, v.v, v.max)
		}
	}
	lj := &lumberjack.Logger{
		Filename:   c.File,
		MaxSize:    orDefault(c.MaxSizeMB, 50),
		MaxBackups: orDefault(c.MaxBackups, 5),
		MaxAge:     orDefault(c.MaxAgeDays, 30),
		Compress:   true,
	}
	if _, err := lj.Write(nil); err != nil {
		return nil, nil, fmt.Errorf("log.file: %w", err)
	}
	lvl, _ := zapcore.ParseLevel(c.Level)
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey, ec.MessageKey, ec.LevelKey, ec.NameKey = "ts", "msg", "level", "logger"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.EncodeDuration = zapcore.StringDurationEncoder
	file := zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(lj), lvl)
	log = zap.New(zapcore.NewTee(log.Core(), file))
	return log, func() error {
		_ = log.Sync()
		return lj.Close()
	}, nil
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
