/*
 * notes@1.0.0 in C: notes kept in the host's entity store (`notes/note`, so they outlive the
 * instance), a count of additions in the host's cache, and an event `evt:note,cmd:added` for
 * every new note, which this plugin's own observer counts.
 *
 *   role:notes,cmd:add,text:...     saves a note, counts it, publishes evt:note,cmd:added
 *   role:notes,cmd:load,id:...      the note, or not_found
 *   role:notes,cmd:list             every note, by text
 *   role:notes,cmd:remove,id:...    the removed note, or not_found
 *   role:notes,cmd:stats            {added: the cache's count, heard: events observed here}
 */
#include "wasmeca.h"

#define NOTES "notes/note"

/* Events this instance's observer handled: statics live as long as the instance. */
static int64_t heard;

static const char *add(wasmeca_value msg) {
  const char *text = wasmeca_require_str(msg, "text");
  wasmeca_value note, added;
  if (!text || !wasmeca_entity_save(&note, NOTES, "{'text':%s}", text)) return NULL;
  /* incr gives null for a missing key (and creates nothing): start the count then. */
  if (!wasmeca_cache_incr(&added, "notes:added", 1)) return NULL;
  if (added.type == WASMECA_NULL && !wasmeca_cache_set("notes:added", "1")) return NULL;
  if (!wasmeca_publish("{'evt':'note','cmd':'added','id':%v}", wasmeca_get(note, "id")))
    return NULL;
  return wasmeca_json(note);
}

static const char *load(wasmeca_value msg) {
  const char *id = wasmeca_require_str(msg, "id");
  wasmeca_value note;
  if (!id || !wasmeca_entity_load(&note, NOTES, "%s", id)) return NULL;
  if (note.type == WASMECA_NULL) return wasmeca_not_found("no note with id %s", id);
  return wasmeca_json(note);
}

static const char *list(wasmeca_value msg) {
  (void)msg;
  wasmeca_value notes;
  if (!wasmeca_entity_list(&notes, NOTES, "{'sort$':{'text':1}}")) return NULL;
  return wasmeca_json(notes);
}

static const char *remove_note(wasmeca_value msg) {
  const char *id = wasmeca_require_str(msg, "id");
  wasmeca_value note;
  if (!id || !wasmeca_entity_remove(&note, NOTES, "%s", id)) return NULL;
  if (note.type == WASMECA_NULL) return wasmeca_not_found("no note with id %s", id);
  return wasmeca_json(note);
}

static const char *stats(wasmeca_value msg) {
  (void)msg;
  wasmeca_value added;
  if (!wasmeca_cache_get(&added, "notes:added")) return NULL;
  double n = 0;
  wasmeca_as_f64(added, &n); /* null (nothing added yet) stays 0 */
  return wasmeca_fmt("{'added':%n,'heard':%D}", n, heard);
}

/* An observer: true once handled; false would have the event delivered again. */
static bool note_added(wasmeca_value event) {
  heard++;
  wasmeca_info("note %s added", wasmeca_json(wasmeca_get(event, "id")));
  return true;
}

bool wasmeca_setup(wasmeca_value options) {
  (void)options;
  wasmeca_plugin("notes", "1.0.0");
  wasmeca_add("role:notes,cmd:add", add);
  wasmeca_example("{'role':'notes','cmd':'add','text':'buy milk'}");
  wasmeca_add("role:notes,cmd:load", load);
  wasmeca_add("role:notes,cmd:list", list);
  wasmeca_example("{'role':'notes','cmd':'list'}");
  wasmeca_add("role:notes,cmd:remove", remove_note);
  wasmeca_add("role:notes,cmd:stats", stats);
  wasmeca_example("{'role':'notes','cmd':'stats'}");
  wasmeca_observe("evt:note,cmd:added", note_added);
  return true;
}
