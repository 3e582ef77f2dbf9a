package bitrix24

import (
	"context"
	"maps"
	"testing"

	"github.com/pbxbridge/pbxbridge/crm"
)

// plainStore hides the batch methods of a store: a CallStore with Get and Set only.
type plainStore struct{ crm.CallStore }

// TestCallStateWithAndWithoutBatch: the adapter's call state reads and writes the same with a
// store that batches and writes lazily (the daemon's) and one that does neither.
func TestCallStateWithAndWithoutBatch(t *testing.T) {
	t.Parallel()
	for name, store := range map[string]crm.CallStore{
		"batch": newCallStore(t),
		"plain": plainStore{newCallStore(t)},
	} {
		t.Run(name, func(t *testing.T) {
			_, batch := store.(crm.CallStoreBatch)
			_, lazy := store.(crm.CallStoreLazy)
			if batch != (name == "batch") || lazy != batch {
				t.Fatalf("store batches: %v, writes lazily: %v", batch, lazy)
			}
			a := &Adapter{store: store}
			ctx := context.Background()
			if err := a.saveCall(ctx, "lab/1.1", "externalCall.1", 1269, "live", "CONTACT:797", []int{1269}); err != nil {
				t.Fatal(err)
			}
			// Read at once: a value written with the store's next commit is seen before it.
			if v, err := a.get(ctx, "lab/1.1", fShown); err != nil || v != "1269" {
				t.Fatalf("shown %q, %v", v, err)
			}
			if err := a.setLater(ctx, "lab/1.1", map[string]string{fShown: "1269,1270"}); err != nil {
				t.Fatal(err)
			}
			if err := a.setLazy(ctx, "lab/1.1", map[string]string{fFinishSent: "1"}); err != nil {
				t.Fatal(err)
			}
			st, err := a.loadState(ctx, "lab/1.1")
			if err != nil {
				t.Fatal(err)
			}
			if st.callID != "externalCall.1" || st.callUser != 1269 || st.source != "live" || st.entity != "CONTACT:797" ||
				len(st.shown) != 2 || st.finished != "" || !st.finishSet {
				t.Fatalf("state %+v", st)
			}
			all, err := a.getAll(ctx, "lab/1.1", fCallID, fFinished)
			if err != nil || all[fCallID] != "externalCall.1" || all[fFinished] != "" {
				t.Fatalf("getAll %v, %v", all, err)
			}
			if err := a.setMany(ctx, "lab/1.2", map[string]string{fFinished: "1:2", fEntity: ""}); err != nil {
				t.Fatal(err)
			}
			all, _ = a.getAll(ctx, "lab/1.2", fFinished, fEntity)
			if !maps.Equal(all, map[string]string{fFinished: "1:2", fEntity: ""}) {
				t.Fatalf("after setMany: %v", all)
			}
		})
	}
}
