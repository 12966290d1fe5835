package session

import "sync"

// A Manager holds a group of sessions to close or wait for together. Its
// zero value is ready to use; it is safe for concurrent use.
type Manager struct {
	mu       sync.Mutex
	sessions []*Session
}

// Add adds s to the group; a nil s is ignored. Sessions of the group that
// have already ended are forgotten on the way, so that a long-lived Manager
// does not keep them.
func (m *Manager) Add(s *Session) {
	if s == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	kept := m.sessions[:0]
	for _, old := range m.sessions {
		select {
		case <-old.done:
		default:
			kept = append(kept, old)
		}
	}
	clear(m.sessions[len(kept):])
	m.sessions = append(kept, s)
}

// CloseAll closes every session of the group, all at once, and forgets
// them. It returns once they have all closed (see Session.Close); a WaitAll
// or Add that runs meanwhile waits for it.
func (m *Manager) CloseAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		s.stop()
	}
	for _, s := range m.sessions {
		<-s.done
	}
	m.sessions = nil
}

// WaitAll blocks until every session in the group when it is called has
// ended.
func (m *Manager) WaitAll() {
	m.mu.Lock()
	sessions := append([]*Session(nil), m.sessions...)
	m.mu.Unlock()
	for _, s := range sessions {
		<-s.done
	}
}
