module github.com/orchestrator/orchestrator

go 1.26.8
