"""DICOM imaging results: a C-STORE SCP (``hrx adapter dicom-scp``) and a PACS puller (``hrx adapter dicom-pull``).

Pixel data never leaves the adapter: instances are reduced to metadata records (:mod:`.metadata`), spooled
durably (:mod:`.spool`), grouped into studies and published as ``hr.imaging-result.v1`` events with a
retrieval pointer to where the images live.

Rules implemented:

- Durability: a C-STORE is answered 0x0000 only after the instance's metadata record is committed to the
  spool (SQLite WAL, synchronous=FULL: fsynced). Broker down: instances are still durable in the spool and
  the assembler publishes them after recovery (exactly once in the store: a crash between publish and
  "mark published" republishes the same (issuer, result_id, version), which the store absorbs). Once the
  broker has been unreachable for ``--broker-grace`` seconds (default 300; 0 = at once) — or
  ``--max-pending-studies`` are waiting, or the spool cannot commit — new instances get 0xA700, so the
  sender keeps them and retries. Never a 0x0000 without a committed record.
- Unusable data sets: 0xC000 undecodable/truncated (pydicom reads truncated values silently, so every
  top-level element's length is checked against the bytes received, and a value of undefined length must
  end with its sequence delimiter), 0xA900 SOP class / Type 1 identifiers wrong, 0xC010 no resident ID,
  0xC011 invalid resident ID, 0xC012 patient differs from the study's earlier instances; each with an
  ErrorComment (≤ 64 characters, scrubbed); nothing is spooled or published. Only the header elements the
  record needs are decoded (never the pixel data).
- Duplicates: the SOP Instance UID is the spool's primary key; a resent instance gets 0x0000 and changes
  nothing (no new event, no new version).
- Completeness: a study is published once no new instance arrived for ``--stable-seconds`` (default 30).
  An instance arriving later makes it publish again as the next version.
- Result id: AccessionNumber, else StudyInstanceUID (fixed at the first publication). Version: 1 + number
  of earlier publications of the study. Status: final when an SR is COMPLETE + VERIFIED or an encapsulated
  PDF report is present (PDF has no verification flag; RIS export it once signed), else preliminary; a
  republished study that was final becomes amended.
- Patient: the resident ID is PatientID (or an OtherPatientIDsSequence item's PatientID) whose
  IssuerOfPatientID is ``NNCHN`` or OID ``2.16.156.10011.1.3`` (also ``urn:oid:…``), or whose
  IssuerOfPatientIDQualifiersSequence has IdentifierTypeCode ``NNCHN`` / UniversalEntityID of that OID;
  ``--patient-id-is-resident-id`` takes an unmarked PatientID for sites that store it there. It is
  validated (GB 11643) and pseudonymized while the C-STORE is answered; the spool keeps only the pseudonym.
  PatientSex M/F/O → male/female/other, birth year from PatientBirthDate.
- Study shape for the unified item (``CodeBook.imaging_item``): ProcedureCodeSequence codes through the
  institution's table first; else Modality (of the image instances, not SR/KO/PR/DOC) + BodyPartExamined
  (most common) + technique: a series is enhanced when an instance names a ContrastBolusAgent (or
  ContrastBolusAgentSequence), localizers are ignored; all series enhanced → contrast, some →
  plain+contrast, none → plain. Waveform IODs carry no body part: a study of waveforms of one class that
  fixes the examination takes its body part and technique from ``data/waveform_shapes.csv`` (12-lead ECG
  → HEART, resting).
- Times: StudyDate/StudyTime (and SR ContentDate/ContentTime) use TimezoneOffsetFromUTC when present, else
  China Standard Time (+08:00). reported_at: the latest report content time, else the study time.
- Report text: SR content items in document order — TEXT as written (line ends made LF), NUM as
  ``name: value unit``, CODE that a container CONTAINS as ``name: meaning`` — whose concept name (or
  enclosing CONTAINER's) contains Finding/Description/所见/描述 → findings,
  Impression/Conclusion/Diagnosis/印象/结论/诊断/意见 → impression, other → findings when nothing was
  labelled; observation and acquisition context (HAS OBS/ACQ CONTEXT: observer, subject, device) is not
  report text. Encapsulated PDF: its text (``pypdf``), else (a scan, an unreadable file) a note that a PDF
  report exists (retrieve the study to read it). Waveforms (ECG): the annotations' measurements
  (``QTc Interval: 370 ms``) → findings, their statements (the device's interpretation) → impression; a
  preliminary report, as nothing in the waveform says a physician confirmed it.
- Associations: at most ``--max-associations`` at once, and at most ``--max-associations-per-ae`` per
  calling AE title and ``--max-associations-per-address`` per source address (:mod:`.admission`), so that
  one host cannot take every slot; a caller over a limit is rejected (A-ASSOCIATE-RJ, local limit exceeded).
  An association idle for ``--network-timeout`` seconds is aborted; a connection that sends no
  A-ASSOCIATE-RQ within ``--acse-timeout`` (ARTIM) is closed.
- Retrieval pointer: ``--retrieve-ae/--retrieve-host/--retrieve-port`` and/or ``--wado-rs`` (the hospital's
  PACS); without them, the sending AE title and its address. The puller points at the PACS it pulled from.
"""
